"""`worldsim eval`: the neural world against the real game on the same keys (PSNR/SSIM, idle, plot, video)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="fidelity of a neural world against the real game: PSNR/SSIM by horizon, idle run, plot, video",
        description=(
            "Runs NeuralWorld and GameWorld side by side on seeded explorer key sequences of the default "
            "level, both started from the same real frames. Writes a JSON, a PSNR-vs-horizon plot and a "
            "real | generated mp4."
        ),
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint name (checkpoints/NAME.safetensors) or path"
    )
    p.add_argument("--quick", action="store_true", help="4 sequences, horizons up to 128, 128 idle frames")
    p.add_argument(
        "--json", default=None, metavar="FILE", help="write the results JSON here (default OUT/eval.json)"
    )
    p.add_argument(
        "--out", default=None, metavar="DIR", help="plot and video directory (default runs/eval-NAME)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps per frame (default: the checkpoint's)"
    )
    p.add_argument("--sequences", type=int, default=None, help="key sequences run side by side")
    p.add_argument("--idle-frames", type=int, default=None, help="frames of the no-keys run")
    p.add_argument("--seed", type=int, default=0, help="seeds of the spawn points and explorer keys")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import sys
    from pathlib import Path

    from worldsim.errors import UserError
    from worldsim.evaluation.runner import EvalConfig, evaluate
    from worldsim.neural import NeuralWorld
    from worldsim.train.common import resolve_device, write_json

    cfg = EvalConfig.quick(args.seed) if args.quick else EvalConfig(seed=args.seed)
    changes = {
        k: v for k, v in (("sequences", args.sequences), ("idle_frames", args.idle_frames)) if v is not None
    }
    try:
        cfg = dataclasses.replace(cfg, **changes)
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    device = resolve_device(args.device)
    neural = NeuralWorld.from_checkpoint(
        args.checkpoint, device=device, batch_size=2 * cfg.sequences, steps=args.steps
    )
    name = getattr(neural, "checkpoint_name", None) or (
        Path(args.checkpoint).stem if args.checkpoint else "default"
    )
    out = Path(args.out or f"runs/eval-{name}")
    result = evaluate(
        neural, cfg, out_dir=out, checkpoint=args.checkpoint or name, progress=sys.stderr.isatty()
    )
    result["quick"] = bool(args.quick)
    json_path = Path(args.json) if args.json else out / "eval.json"
    write_json(result, json_path)

    rows = [("horizon", "PSNR", "SSIM", "copy-last PSNR", "copy-last SSIM")]
    base = result["baseline_copy_last"]
    for h in result["psnr"]:
        rows.append((h, result["psnr"][h], result["ssim"][h], base["psnr"][h], base["ssim"][h]))
    for r in rows:
        print("  ".join(f"{c!s:>14}" for c in r))
    idle = result["idle"]
    print(
        f"idle {idle['frames']} frames: in range {idle['in_range']}, collapsed {idle['collapsed']}, PSNR vs start {idle['psnr_last_vs_start']} dB"
    )
    print(f"{result['seconds']} s on {result['device']}; JSON {json_path}; plot and video in {out}")
    print(json.dumps({"psnr": result["psnr"], "ssim": result["ssim"]}))
    return 0
