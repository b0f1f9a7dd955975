"""The inference-time context noise level, measured: the same checkpoint evaluated with finished frames
entering the cache at each level (`NeuralWorld.from_checkpoint(context_noise=)`), so the level a
checkpoint ships with is the one that holds best, not a guess.

    python3 scripts/context_noise.py --checkpoint tiny --levels 0 0.05 0.1 0.2 --device cuda \
        --idle-frames 2000 --json runs/context_noise_tiny.json

Prints one row per level: PSNR and margin over copy-last per horizon, the idle run's last-frame PSNR to
the true view and its brightness drift, the motion ratio. The eval is `worldsim eval --quick`'s (4
sequences) unless --sequences says more.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldsim.device import resolve_device  # noqa: E402
from worldsim.evaluation.runner import EvalConfig, evaluate  # noqa: E402
from worldsim.worlds import make_world  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    p.add_argument("--device", default=None)
    p.add_argument("--sequences", type=int, default=None)
    p.add_argument("--idle-frames", type=int, default=300)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = dataclasses.replace(EvalConfig.quick(0), idle_frames=args.idle_frames, loop=False, action=False,
                              long_frames=0)  # fmt: skip
    if args.sequences:
        cfg = dataclasses.replace(cfg, sequences=args.sequences)
    rows = []
    for level in args.levels:
        world = make_world("neural", checkpoint=args.checkpoint, device=device, batch_size=cfg.world_batch,
                           steps=args.steps, context_noise=level)  # fmt: skip
        r = evaluate(world, cfg, checkpoint=args.checkpoint, progress=False)
        idle = r["idle"]
        row = {"level": level, "psnr": r["psnr"], "margin": r["margin_over_copy_last"],
               "idle_psnr_last": idle["psnr_last"], "idle_drift": idle["drift"],
               "motion_ratio": r["motion"]["ratio"], "seconds": r["seconds"]}  # fmt: skip
        rows.append(row)
        margins = " ".join(f"{h}:{v:+.2f}" for h, v in r["margin_over_copy_last"].items())
        print(f"level {level:.2f}: PSNR {r['psnr']} margin {margins} | idle {cfg.idle_frames}: "
              f"{idle['psnr_last']} dB, drift {row['idle_drift']} | motion {row['motion_ratio']}", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "device": str(device),
                                               "sequences": cfg.sequences, "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
