"""`worldsim eval`: the neural world against the real game on the same keys (PSNR/SSIM by horizon, idle,
action following, loop test, long run; plots and a video), against held-out recorded episodes of a
dataset (`--data DIR`), or `--compare` of several eval JSONs."""

from __future__ import annotations

import argparse

from worldsim.cli.options import add_no_verify


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="fidelity of a neural world against the real game or a dataset: PSNR/SSIM by horizon, plot, video",
        description=(
            "Runs NeuralWorld and GameWorld side by side on seeded explorer key sequences of the default "
            "level, both started from the same real frames. With --data DIR: the held-out clips of a "
            "dataset instead, open-loop on their recorded keys after --context real frames (key names and "
            "frame size must match the checkpoint's). Writes a JSON, a PSNR-vs-horizon plot and a "
            "real | generated mp4."
        ),
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint name (checkpoints/NAME.safetensors) or path"
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="score on the held-out clips of this dataset instead of the real game: --context real frames, "
        "then open-loop on the recorded keys (its IDM is trained and cached in DIR when missing)",
    )
    p.add_argument("--context", type=int, default=None, help="--data: real frames each clip starts from (4)")
    p.add_argument(
        "--horizons", type=int, nargs="+", default=None, metavar="H", help="--data: horizons (1 8 32 128)"
    )
    p.add_argument("--episodes", type=int, default=None, help="--data: held-out clips scored (default all)")
    p.add_argument("--batch", type=int, default=None, help="--data: clips run side by side (default 64)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="4 sequences, horizons up to 128, 300 idle frames, no long run (< 3 min on 2 CPU cores); "
        "without it: 64 sequences, horizons up to 512, 2000 idle frames, 18000-frame run (for a GPU)",
    )
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
    p.add_argument("--context-noise", type=float, default=None, metavar="T",
                   help="neural world: the noise level finished frames enter the cache at, instead of the checkpoint's (0.1: standing still the view keeps its brightness, walking it moves less; docs/experiments/context_noise_h200)")  # fmt: skip
    p.add_argument("--idle-context-noise", type=float, default=None, metavar="T",
                   help="neural world: the level for frames made while no key is held, instead of the checkpoint's (walking keeps the other level; a student trained at 0.1 holds a still view there, the shipped ones do not: docs/experiments/idle_context_noise)")  # fmt: skip
    p.add_argument(
        "--weights",
        choices=("fp", "int8", "fp8"),
        default="fp",
        help="DiT weights: as stored (fp), int8 per-channel or fp8 W8A8 calibrated at load (engine/quant.py, fp8.py)",
    )
    p.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="activations (default auto: bf16 on CUDA, fp32 on a CPU; play may run bf16 on a CPU, see README)",
    )
    p.add_argument("--sequences", type=int, default=None, help="key sequences run side by side")
    p.add_argument("--idle-frames", type=int, default=None, help="frames of the no-keys run")
    p.add_argument("--seed", type=int, default=0, help="seeds of the spawn points and explorer keys")
    p.add_argument(
        "--long-frames", type=int, default=None, help="frames of the long run (default 18000; 0 with --quick)"
    )
    p.add_argument("--no-loop", action="store_true", help="skip the loop test")
    p.add_argument("--no-action", action="store_true", help="skip action following (the IDM)")
    p.add_argument(
        "--idm",
        default=None,
        metavar="FILE",
        help="the cached inverse-dynamics model (trained there if missing)",
    )
    p.add_argument("--idm-steps", type=int, default=None, help="IDM training batches when it is not cached")
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="NAME=JSON",
        help="no evaluation: plot these eval JSONs side by side (e.g. student=a.json baseline=b.json) into --out",
    )
    add_no_verify(p)
    p.set_defaults(func=run)


def compare(specs: list[str], out: str | None) -> int:
    import json
    from pathlib import Path

    from worldsim.errors import UserError
    from worldsim.evaluation.plots import plot_compare

    results = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        try:
            results[name or path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--compare {spec}: cannot read the eval JSON {path} ({e})") from e
    out_dir = Path(out or "runs/eval-compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_compare(results, out_dir / "compare.png")
    hs = sorted({h for r in results.values() for h in r["psnr"]}, key=int)
    print("  ".join(f"{c:>12}" for c in ["PSNR @", *hs]))
    for name, r in results.items():
        print("  ".join(f"{c!s:>12}" for c in [name, *(r["psnr"].get(h, "-") for h in hs)]))
    print(f"plot {out_dir / 'compare.png'}")
    return 0


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import sys
    from pathlib import Path

    from worldsim.errors import UserError
    from worldsim.evaluation.runner import EvalConfig, evaluate

    if args.compare:
        return compare(args.compare, args.out)
    for flag, value, least in (("--sequences", args.sequences, 1), ("--idle-frames", args.idle_frames, 1),
                               ("--long-frames", args.long_frames, 0), ("--idm-steps", args.idm_steps, 1),
                               ("--steps", args.steps, 1), ("--context", args.context, 1),
                               ("--episodes", args.episodes, 1), ("--batch", args.batch, 1),
                               ("--horizons", min(args.horizons or [1]), 1)):  # fmt: skip
        if value is not None and value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if args.data:
        return run_data(args)
    game_only = [f for f, v in (("--context", args.context), ("--horizons", args.horizons),
                                ("--episodes", args.episodes), ("--batch", args.batch)) if v is not None]  # fmt: skip
    if game_only:
        raise UserError(f"{', '.join(game_only)} score a dataset: pass --data DIR with them")
    cfg = EvalConfig.quick(args.seed) if args.quick else EvalConfig(seed=args.seed)
    changes = {
        k: v
        for k, v in (
            ("sequences", args.sequences),
            ("idle_frames", args.idle_frames),
            ("long_frames", args.long_frames),
            ("idm_path", args.idm),
            ("idm_steps", args.idm_steps),
        )
        if v is not None
    }
    changes.update({k: False for k, off in (("loop", args.no_loop), ("action", args.no_action)) if off})
    try:
        cfg = dataclasses.replace(cfg, **changes)
    except ValueError as e:
        raise UserError(str(e)) from e
    neural, name, dtype = _neural_world(args, cfg.world_batch)
    out = Path(args.out or f"runs/eval-{name}")
    result = evaluate(
        neural, cfg, out_dir=out, checkpoint=args.checkpoint or name, progress=sys.stderr.isatty()
    )
    result["quick"] = bool(args.quick)
    json_path = _write(result, args, out, dtype)

    _print_verdicts(result)
    _print_action(result["action_accuracy"])
    loop = result["loop"] or {}
    for name in ("turn_180_and_back", "walk_and_back"):
        if name in loop:
            r = loop[name]
            print(
                f"loop {name}: end PSNR vs real {r['psnr_end_vs_real']} dB (mid {r['psnr_mid_vs_real']} dB), "
                f"vs start {r['psnr_end_vs_start']} dB"
            )
    lr = result["long_run"]
    if lr:
        print(
            f"long run {lr['frames']} frames: NaN {lr['nan']}, in range {lr['in_range']} "
            f"({lr['minutes_in_range']}/{len(lr['per_minute'])} minutes)"
        )
    print(f"{result['seconds']} s on {result['device']}; JSON {json_path}; plots and video in {out}")
    print(json.dumps({"psnr": result["psnr"], "ssim": result["ssim"]}))
    return 0


def _neural_world(args: argparse.Namespace, batch_size: int):
    """The neural world of `--checkpoint` for `batch_size` games, its name and its activation dtype."""
    from pathlib import Path

    import torch

    from worldsim.device import resolve_device
    from worldsim.worlds import make_world

    device = resolve_device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(args.dtype)
    if (
        dtype is None
    ):  # auto: the world's default, bf16 on CUDA and fp32 on a CPU (not the play engine's pick)
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    neural = make_world(
        "neural", checkpoint=args.checkpoint, weights=args.weights, device=device,
        batch_size=batch_size, steps=args.steps, dtype=dtype,
        **({} if args.context_noise is None else {"context_noise": args.context_noise}),
        **({} if args.idle_context_noise is None else {"idle_context_noise": args.idle_context_noise}),
    )  # fmt: skip
    name = neural.describe().get("checkpoint") or (
        Path(args.checkpoint).stem if args.checkpoint else "default"
    )
    return neural, name, dtype


def _write(result: dict, args: argparse.Namespace, out, dtype):
    """Record how the world ran, write the JSON (--json, default OUT/eval.json); return its path."""
    from pathlib import Path

    from worldsim.train.common import write_json

    result["weights"] = args.weights
    result["context_noise"] = args.context_noise  # the cache-write level asked for; None: the checkpoint's
    result["idle_context_noise"] = args.idle_context_noise  # the same, for frames made with no key held
    result["dtype"] = str(dtype).removeprefix("torch.")
    json_path = Path(args.json) if args.json else Path(out) / "eval.json"
    write_json(result, json_path)
    return json_path


def run_data(args: argparse.Namespace) -> int:
    """`worldsim eval --data DIR`: the checkpoint against held-out recorded clips of a dataset."""
    import dataclasses
    import json
    import sys
    from pathlib import Path

    from worldsim.data import Dataset
    from worldsim.errors import UserError
    from worldsim.evaluation.dataset_runner import DataEvalConfig, evaluate_dataset, world_batch

    ignored = [f for f, v in (("--quick", args.quick), ("--sequences", args.sequences),
                              ("--idle-frames", args.idle_frames), ("--long-frames", args.long_frames),
                              ("--no-loop", args.no_loop)) if v]  # fmt: skip
    if ignored:
        raise UserError(
            f"{', '.join(ignored)} drive the game eval; --data scores recorded clips without them"
        )
    changes = {k: v for k, v in (("context_frames", args.context), ("episodes", args.episodes),
                                 ("batch", args.batch), ("idm_path", args.idm), ("idm_steps", args.idm_steps),
                                 ("horizons", tuple(args.horizons or ()) or None)) if v is not None}  # fmt: skip
    try:
        cfg = dataclasses.replace(DataEvalConfig(action=not args.no_action), **changes)
    except ValueError as e:
        raise UserError(str(e)) from e
    ds = Dataset(args.data)
    neural, name, dtype = _neural_world(args, world_batch(ds, cfg))
    out = Path(args.out or f"runs/eval-{name}-{Path(args.data).name}")
    result = evaluate_dataset(
        neural, ds, cfg, out_dir=out, checkpoint=args.checkpoint or name, progress=sys.stderr.isatty()
    )
    json_path = _write(result, args, out, dtype)
    _print_verdicts(result)
    resets = result["episode_resets"]
    print(f"episode resets: {resets['source']} ({resets['clips_with_reset']} scored clips reset)")
    for h, why in result["horizons_dropped"].items():
        print(f"horizon {h} dropped: {why}")
    _print_action(result["action_accuracy"])
    print(f"{result['seconds']} s on {result['device']}; JSON {json_path}; plot and video in {out}")
    print(json.dumps({"psnr": result["psnr"], "ssim": result["ssim"]}))
    return 0


def _print_action(acc: dict | None) -> None:
    if acc:
        print(
            f"action following (IDM, exact / per key): real {acc['real']['exact']} / {acc['real']['per_key']}, "
            f"generated {acc['generated']['exact']} / {acc['generated']['per_key']}"
            + (f", chance {acc['chance']['exact']} / {acc['chance']['per_key']}" if "chance" in acc else "")
        )


def _or_dash(v) -> str:
    return "-" if v is None else str(v)


def _print_verdicts(result: dict) -> None:
    """The per-horizon table (margin over copy-last, motion, controllability, verdict), then idle."""
    base, control = result["baseline_copy_last"], result["controllability"] or {}
    head = ("horizon", "PSNR", "copy-last PSNR", "margin dB", "SSIM", "copy-last SSIM", "motion ratio",
            "keys vs shuffled", "verdict")  # fmt: skip
    widths = [max(len(c), 7) for c in head]
    print("  ".join(f"{c:>{w}}" for c, w in zip(head, widths)))
    for h in result["psnr"]:
        cells = (h, result["psnr"][h], base["psnr"][h], f"{result['margin_over_copy_last'][h]:+.3f}",
                 result["ssim"][h], base["ssim"][h], _or_dash(result["motion"]["ratio_by_horizon"][h]),
                 _or_dash(control.get("margin_db", {}).get(h)),
                 "pass" if result["pass"]["horizons"][h] else "FAIL")  # fmt: skip
        print("  ".join(f"{c!s:>{w}}" for c, w in zip(cells, widths)))
    for h, line in result["verdict"].items():
        print(f"{h:>5} frames: {line}")
    print(f"motion: {result['motion']['verdict']}")
    if result.get("contrast"):
        print(
            f"contrast: {result['contrast']['verdict']}; by horizon {result['contrast']['ratio_by_horizon']}"
        )
    if control:
        print(f"controllability: {control['verdict']}; shuffled keys: {control['shuffle']}")
    idle = result["idle"]
    if idle:
        print(f"idle {idle['frames']} frames: {idle['verdict']}; PSNR by idle frame {idle['psnr_curve']}")
