"""Load client: `python -m worldsim.controllers.load_client ADDR --seconds S` plays like a person and prints JSON.

Used by `worldsim bench --serve` and scripts/serve_scaling.py; light on purpose, one process per
simulated player.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from worldsim.controllers.client import Client


def run_load(
    addr: str,
    *,
    seconds: float = 5.0,
    fps: float = 30.0,
    seed: int = 0,
    start_at: float | None = None,
    keys_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Send sticky random keys every 1/fps (at this client's own phase), show the newest frame, and
    measure from `start_at` (wall clock; default now + 1 s) for `seconds`: fps, input-to-frame latency
    (client clock), and frames made in that window that this client never showed (dropped)."""
    import random

    rng = random.Random(seed)
    with Client(addr, fps=fps, keys_dir=keys_dir, name=f"load-{seed}", timeout_s=30.0) as c:
        num_keys = len(c.connect()["key_names"])
        keys = [False] * num_keys
        t0 = time.monotonic()
        begin = t0 + (1.0 if start_at is None else max(0.0, start_at - time.time()))
        end = begin + seconds
        period = 1.0 / fps
        next_send = t0 + rng.random() * period
        shown, latencies, numbers = 0, [], []
        while (now := time.monotonic()) < end:
            if now >= next_send:
                if rng.random() < 0.1:  # sticky keys: change now and then
                    keys = [rng.random() < 0.3 for _ in range(num_keys)]
                c.send_keys(keys)
                next_send = max(next_send + period, now)
            frame = c.poll_frame(timeout_ms=max(0, int((next_send - time.monotonic()) * 1000)))
            if frame is not None and time.monotonic() >= begin:
                shown += 1
                numbers.append(frame.number)
                if frame.latency_ms is not None:
                    latencies.append(frame.latency_ms)
        lat = np.asarray(latencies, dtype=np.float64)
        made = numbers[-1] - numbers[0] + 1 if numbers else 0
        return {
            "name": f"load-{seed}",
            "fps": round(shown / seconds, 2),
            "frames": shown,
            "dropped": max(0, made - shown),
            "latency_ms": {
                "n": int(lat.size),
                "p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                "p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
                "mean": round(float(lat.mean()), 2) if lat.size else None,
            },
        }


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(
        prog="python -m worldsim.controllers.load_client", description=run_load.__doc__
    )
    p.add_argument("addr")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--start-at", type=float, default=None, help="wall-clock time (time.time()) to start measuring"
    )
    p.add_argument("--keys", default=None, metavar="DIR", help="CURVE key directory")
    a = p.parse_args(argv)
    result = run_load(a.addr, seconds=a.seconds, fps=a.fps, seed=a.seed, start_at=a.start_at, keys_dir=a.keys)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
