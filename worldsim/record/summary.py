"""A recording in numbers: what `worldsim replay --headless` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldsim.record.format import RecordingError
from worldsim.record.reader import RecordingReader


def summarize(path: str | Path) -> dict:
    """Stream the file once and return world, frames, duration, fps, key usage and latency percentiles."""
    reader = RecordingReader(path)
    names = list(reader.header["key_names"])
    presses = np.zeros(len(names), np.int64)
    latencies: list[float] = []
    n = 0
    first_t = last_t = 0.0
    resets = 0
    stopped = None  # a version-1 file has no checksums: damage ends the read; keep what came before
    try:
        for rec in reader:
            if n == 0:
                first_t = rec.time
            last_t = rec.time
            presses += rec.keys
            n += 1
            resets += n > 1 and rec.reset_seed is not None  # the first frame is always a reset
            if rec.latency_ms is not None:
                latencies.append(rec.latency_ms)
    except RecordingError as e:
        stopped = str(e)
    h = reader.header
    lat = np.asarray(latencies, np.float64)
    return {
        "path": str(path),
        "world": h["world"],
        "checkpoint_hash": h["checkpoint_hash"],
        "seed": h["seed"],
        "height": h["height"],
        "width": h["width"],
        "fps": h["fps"],
        "frames": n,
        "duration_s": n / h["fps"],
        "wall_s": last_t - first_t,
        "resets": resets,
        "key_usage": {name: (float(presses[i]) / n if n else 0.0) for i, name in enumerate(names)},
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        "truncated": reader.truncated,
        "records_skipped": reader.records_skipped,
        "damaged_at": list(reader.damaged_at),
        "stopped": stopped,
        "extra": h["extra"],
    }


def format_summary(s: dict) -> str:
    lines = [
        f"{s['path']}",
        f"  world      {s['world']}"
        + (f"  (checkpoint {s['checkpoint_hash']})" if s["checkpoint_hash"] else ""),
        f"  size       {s['width']}x{s['height']}   seed {s['seed']}",
        f"  frames     {s['frames']}  ({s['duration_s']:.2f} s at {s['fps']:.3g} fps; recorded over {s['wall_s']:.2f} s)",
    ]
    if s["resets"]:
        lines.append(f"  resets     {s['resets']} mid-session")
    usage = "  ".join(f"{k} {100 * v:.0f}%" for k, v in s["key_usage"].items())
    lines.append(f"  key usage  {usage or '(no keys)'}")
    if s["latency_ms_p50"] is None:
        lines.append("  latency    not recorded")
    else:
        lines.append(f"  latency    p50 {s['latency_ms_p50']:.2f} ms   p99 {s['latency_ms_p99']:.2f} ms")
    if s["records_skipped"]:
        where = ", ".join(f"byte {b}" for b in s["damaged_at"][:5]) + (
            ", ..." if len(s["damaged_at"]) > 5 else ""
        )
        lines.append(
            f"  damaged    {s['records_skipped']} record(s) skipped in {len(s['damaged_at'])} place(s) "
            f"({where}); every sound record was read"
        )
    if s["stopped"]:
        lines.append(f"  damaged    reading stopped at record {s['frames']}: {s['stopped']}")
    if s["truncated"]:
        lines.append(
            "  WARNING    truncated: the file ends inside a record (the writer stopped mid-write); "
            "every complete record was read"
        )
    return "\n".join(lines)
