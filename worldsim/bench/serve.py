"""`worldsim bench serve`: a server and N real-time clients (one process each) on loopback.

Each client sends keys every frame interval at its own phase and shows the newest frame; the JSON
has per-client fps, input-to-frame latency (client clock) and dropped frames, plus the server's view.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from worldsim.errors import UserError

log = logging.getLogger(__name__)

TARGET_FPS = 27.0
TARGET_P99_MS = 50.0


def run(args: argparse.Namespace) -> int:
    from worldsim.serve import Server, world_factory  # zmq (heavy, optional): only for this benchmark

    if args.clients < 1:
        raise UserError(f"--clients must be >= 1, got {args.clients}")
    if args.seconds <= 0:
        raise UserError(f"--seconds must be > 0, got {args.seconds}")
    fps = 30.0
    factory = world_factory(args.world, checkpoint=args.checkpoint, size=args.size, device=args.device)
    # One torch thread, as `worldsim serve` defaults to: the clients share the same cores.
    server = Server(factory, max_sessions=args.clients, fps=fps, stats_interval_s=0, torch_threads=1).start()
    try:
        start_at = time.time() + 2.0 + 0.3 * args.clients  # every client connected before measuring
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worldsim.controllers.load_client",
                    server.address,
                    "--seconds",
                    str(args.seconds),
                    "--fps",
                    str(fps),
                    "--seed",
                    str(i),
                    "--start-at",
                    str(start_at),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(args.clients)
        ]
        clients = []
        for p in procs:
            out, err = p.communicate(timeout=start_at - time.time() + args.seconds + 60)
            if p.returncode != 0:
                raise RuntimeError(f"load client failed (exit {p.returncode}): {err.strip()[-500:]}")
            clients.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        server.stop()
    server_view = server.stats()  # after stop: every session closed with its final stats

    assert server.world is not None
    ok = all(c["fps"] >= TARGET_FPS and (c["latency_ms"]["p99"] or 1e9) <= TARGET_P99_MS for c in clients)
    result = {
        "world": server.world.name,
        "size": [server.world.height, server.world.width],
        "clients": clients,
        "seconds": args.seconds,
        "fps_target": fps,
        "target": {"fps": TARGET_FPS, "p99_ms": TARGET_P99_MS, "met": ok},
        "server": {k: v for k, v in server_view.items() if k not in ("session_stats", "closed_sessions")},
        "server_sessions": server_view["closed_sessions"] + server_view["session_stats"],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": 1,
            "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews every figure
        },
    }
    _print_table(result)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)
    return 0


def _print_table(r: dict) -> None:
    h, w = r["size"]
    print(f"serve bench: {r['world']} {h}x{w}, {len(r['clients'])} real-time clients at {r['fps_target']:g} fps, "
          f"{r['seconds']:g} s on {r['machine']['cpus']} CPUs (load avg {r['machine']['load_avg_1m']})")  # fmt: skip
    print(f"{'client':<10}{'fps':>8}{'p50 ms':>10}{'p99 ms':>10}{'dropped':>9}")
    for c in r["clients"]:
        lat = c["latency_ms"]
        p50 = f"{lat['p50']:.1f}" if lat["p50"] is not None else "-"
        p99 = f"{lat['p99']:.1f}" if lat["p99"] is not None else "-"
        print(f"{c['name']:<10}{c['fps']:>8.1f}{p50:>10}{p99:>10}{c['dropped']:>9}")
    ws = r["server"]["world_step_ms"]
    if ws["n"]:
        print(f"server: batched World.step p50 {ws['p50']:.1f} ms, p99 {ws['p99']:.1f} ms, "
              f"{ws['mean_batch']:.1f} sessions per step")  # fmt: skip
    t = r["target"]
    print(
        f"target >= {t['fps']:g} fps and p99 <= {t['p99_ms']:g} ms per client: {'met' if t['met'] else 'NOT met'}"
    )
