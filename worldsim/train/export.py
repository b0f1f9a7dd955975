"""Export a teacher train state to a shipped checkpoint (safetensors) and write its model card.

    worldsim train export RUN/teacher/teacher.pt checkpoints/tiny.safetensors [--int8] \
        [--autoencoder-metrics RUN/ae/autoencoder.json] [--eval-json eval.json] [--card-only]

(`python -m worldsim.train.export` takes the same arguments.) With `--int8` the named file is the 8-bit
one that ships (`worldsim.engine.quant.export_int8`) and the bf16 export goes beside it as NAME-bf16.

The checkpoint holds the EMA DiT, the autoencoder, start latents (encoded real spawn frames of the
default level), the config and the training metrics; weights are stored in bf16 by default (the
budget of docs/design.md §4), 1-D tensors (norms, biases, latent statistics) stay fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path

import torch

from worldsim.checkpoint import save_checkpoint
from worldsim.engine.quant import export_int8
from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.model.autoencoder import Autoencoder, frames_to_model
from worldsim.model.config import ModelConfig
from worldsim.train import common, resume
from worldsim.train.options import START_SEEDS, add_export_arguments

log = logging.getLogger(__name__)

# the parts of a `worldsim eval` JSON a card carries (the honest verdicts with the raw figures)
EVAL_KEYS = ("psnr", "ssim", "baseline_copy_last", "margin_over_copy_last", "verdict", "pass", "motion",
             "controllability", "idle", "device", "action_accuracy", "loop", "long_run")  # fmt: skip
# The card's storage line for each kind of file
STORAGE = {
    "bf16": "EMA weights; matrices/kernels bf16, vectors fp32",
    "fp32": "EMA weights; every tensor fp32",
    "int8": "EMA weights in 8 bits: the DiT blocks' linears int8 per output channel; every other matrix and "
    "convolution int8 per channel, read back as floats; vectors bf16 (`worldsim.engine.quant.export_int8`)",
    "int8-g": "EMA weights in 8 bits: the DiT blocks' linears int8 with one scale per {group} input columns; "
    "every other matrix and convolution int8 per channel; all read back as floats (bf16 compute); vectors "
    "bf16 (`worldsim.engine.quant.export_int8(..., group={group})`)",
}


def storage_line(storage: str, group: int | None = None) -> str:
    """The card's storage line: STORAGE[storage], with the group size of a grouped 8-bit file."""
    return STORAGE["int8-g"].format(group=group) if storage == "int8" and group else STORAGE[storage]


def _storage(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Matrices and conv kernels in `dtype`; vectors and non-float tensors as they are."""
    return {
        k: (v.to(dtype) if v.is_floating_point() and v.ndim >= 2 else v).contiguous().clone()
        for k, v in state.items()
    }


@torch.no_grad()
def start_latents(ae: Autoencoder, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Spawn frames of the default level for `seeds` `[S,H,W,3]` uint8 and their latents `[S,C,h,w]`."""

    game = GameWorld(batch_size=len(seeds), size=ae.cfg.hw, level="default", device="cpu")
    frames = game.reset(seeds)
    z = ae.cpu().eval().encode(frames_to_model(frames))
    return frames, z.float()


@torch.no_grad()
def encoded_starts(ae: Autoencoder, recorded: torch.Tensor | None, seeds: int) -> tuple[torch.Tensor, int]:
    """The start latents `[S,C,h,w]` and their count: the first `seeds` of a dataset run's recorded
    episode-start frames (uint8 `[N,H,W,3]`), or with none the default level's spawns 0..seeds-1."""
    if recorded is None:
        return start_latents(ae, list(range(seeds)))[1], seeds
    seeds = min(seeds, len(recorded))
    return ae.cpu().eval().encode(frames_to_model(recorded[:seeds])).float(), seeds


def budget_minutes(budget: dict) -> str:
    """'12.5 min on NVIDIA H200, ...': the device minutes of a cumulative budget (resume.add_run)."""
    return ", ".join(f"{m} min on {dev}" for dev, m in budget.get("device_minutes", {}).items())


def export(
    state_path: str | Path,
    out_path: str | Path,
    *,
    train_metrics: dict | None = None,
    eval_result: dict | None = None,
    dtype: torch.dtype = torch.bfloat16,
    seeds: int = START_SEEDS,
    int8_path: str | Path | None = None,
    int8_group: int | None = None,
    context_noise: float | None = None,
) -> Path:
    """Write `out_path` (.safetensors) and its card (`.md` beside it) from a teacher train state; with
    `int8_path`, also the 8-bit checkpoint made from it (`int8_group`: per-group scales of the blocks'
    linears, `export_int8`), and its card. `context_noise`: the cache-write level the file deploys (default
    the run's config; a teacher trained on context levels up to it plays better there, §7.2)."""

    state = resume.load_train_state(state_path)
    if state.get("kind") != "teacher":
        raise UserError(f"{state_path} is not a teacher train state (kind={state.get('kind')!r})")
    cfg = ModelConfig.from_dict(state["config"])
    if context_noise is not None:
        cfg = dataclasses.replace(cfg, context_noise=context_noise)
    ae = Autoencoder(cfg.autoencoder)
    ae.load_state_dict(state["autoencoder"])
    z, seeds = encoded_starts(ae, state.get("start_frames", {}).get("frames"), seeds)
    metrics = {"teacher": state.get("metrics", {}), "autoencoder": state.get("autoencoder_metrics", {})}
    metrics.update(train_metrics or {})
    if eval_result:
        metrics["eval"] = {k: eval_result[k] for k in EVAL_KEYS if k in eval_result}
    out_path = Path(out_path)
    save_checkpoint(
        out_path,
        config=cfg,
        dit=_storage(state["ema"], dtype),
        autoencoder=_storage(ae.state_dict(), dtype),
        start_latents=z,
        metrics=metrics,
    )
    write_card(
        out_path, cfg, state, metrics, seeds=seeds, storage="bf16" if dtype == torch.bfloat16 else "fp32"
    )
    written = [out_path]
    if int8_path is not None:
        int8_path = export_int8(out_path, int8_path, group=int8_group)
        write_card(int8_path, cfg, state, metrics, seeds=seeds, storage="int8", group=int8_group)
        written.append(int8_path)
    for path in written:  # debug: the command line says what it wrote, once
        log.debug("exported %s (%.2f MiB) and its card", path, path.stat().st_size / 2**20)
    return out_path


def _budget_lines(tm: dict) -> list[str]:
    """The card's lines on what every run of this model cost together (resumed runs add up)."""
    b = tm.get("budget")
    if not b:
        return []
    minutes = budget_minutes(b)
    data = tm.get("data", {})
    src = data.get("source", "live")
    if src == "store":
        src = (f"a latent store of {data.get('trajectories')} trajectories x {data.get('length')} frames, "
               f"{data.get('refresh_fraction')} of it re-rendered every {data.get('refresh_every')} steps")  # fmt: skip
    return [
        f"- Budget, all runs together: {b.get('steps')} steps, {b.get('clips')} clips, {minutes}, "
        f"{b.get('runs')} run(s); data of the last run: {src}; context noise up to {tm.get('context_max')} on "
        f"{tm.get('context_prob')} of the frames{_recipe(tm)}."
    ]


def _recipe(hp: dict) -> str:
    """The context corruptions of the last run (train/corrupt.py), as a clause; "" when none was on."""
    parts = []
    if hp.get("context_aug_prob"):
        parts.append(f"{hp['context_aug_prob']} of the context frames up to {hp.get('context_aug_max')}")
    if hp.get("context_offset"):
        parts.append(
            f"colour offsets (std {hp['context_offset']}) on {hp.get('context_offset_prob')} of them"
        )
    if hp.get("own_prob"):
        parts.append(f"{hp['own_prob']} of the rows on the model's own predictions")
    if hp.get("motion_share"):
        parts.append(
            f"{hp['motion_share']} of the loss weighted by each token's change from the frame before"
        )
    return "; " + ", ".join(parts) if parts else ""


def _dataset_lines(data: dict | None) -> list[str]:
    """The card's lines on the dataset the model learned from (its manifest), none for the built-in game."""
    if not data:
        return []
    policy = data.get("policy") or {}
    mix = ", ".join(f"{k} {v:.0%}" for k, v in (policy.get("mix") or {}).items())
    return [
        f"- Data: dataset `{Path(str(data.get('path', '?'))).name}` (format v{data.get('version')}): "
        f"{data.get('source')}; {data.get('count')} clips of {data.get('frames')} frames "
        f"({data.get('frame_count')} frames, {data.get('episode_count')} episodes) at "
        f"{data.get('width')}x{data.get('height')}, frame skip {_fmt(data.get('frame_skip'))}, {_fmt(data.get('fps'))} fps"
        + (f"; policy mix {mix}{', FIRE at each start' if policy.get('fire') else ''}" if mix else "")
        + "; the held-out tenth of its clips never trained on.",
    ]


def _fmt(v) -> str:
    return "n/a" if v is None else str(v)


def write_card(
    out_path: Path,
    cfg,
    state: dict,
    metrics: dict,
    *,
    seeds: int,
    storage: str = "bf16",
    group: int | None = None,
) -> Path:
    """A markdown model card beside the checkpoint: what it is, how trained, what was measured, how to reproduce."""
    tm = state.get("metrics", {})
    ae = metrics.get("autoencoder", {})
    ev = metrics.get("eval", {})
    ae_frames = "the dataset's training frames" if ae.get("dataset") else "frames rendered on the fly"
    data = tm.get("dataset")  # the manifest of the dataset it was trained on (None: the built-in game)
    world = (
        "the worldsim raycaster's default level"
        if not data
        else f"`{data.get('env') or data.get('source')}` (dataset)"
    )
    starts = (f"{seeds} encoded spawn frames of the default level (seeds 0..{seeds - 1})" if not data
              else f"{seeds} encoded episode-start frames of the dataset's training split")  # fmt: skip
    sha = hashlib.sha256(out_path.read_bytes()).hexdigest()[:16]
    n_params = sum(v.numel() for v in state["ema"].values() if v.is_floating_point())
    h, w = cfg.image_hw
    lines = [
        f"# worldsim checkpoint `{out_path.stem}`",
        "",
        f"A block-causal video diffusion transformer (DiT) that generates the next {h}x{w} frame of {world}",
        "from the frames so far and the keys pressed (docs/design.md §4).",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{out_path.name}`, {out_path.stat().st_size / 2**20:.2f} MiB, sha256 `{sha}...` |",
        f"| preset | {cfg.name}: width {cfg.width} x depth {cfg.depth}, {cfg.heads} heads, {n_params / 1e6:.2f}M DiT parameters |",
        f"| tokens | {cfg.tokens_per_frame} per frame (latent {cfg.latent_channels}x{cfg.latent_hw[0]}x{cfg.latent_hw[1]}, patch {cfg.patch_size}) |",
        f"| attention | block-causal, {cfg.block_frames}-frame blocks, window {cfg.window} frames, {cfg.sinks} sink frames |",
        f"| sampling | {cfg.steps} steps, {cfg.schedule} schedule (shift {cfg.schedule_shift}), context noise {cfg.context_noise} |",
        f"| keys | {', '.join(cfg.key_names)} |",
        f"| start latents | {starts} |",
        f"| storage | {storage_line(storage, group)} |",
        "",
        "## How it was trained",
        "",
        *_dataset_lines(data),
        f"- Autoencoder: {_fmt(ae.get('steps'))} steps, batch {_fmt(ae.get('batch'))}, L1 + MSE + image-gradient loss on",
        f"  {ae_frames} ({_fmt(ae.get('device'))}); {_fmt(ae.get('params_encoder'))} encoder /",
        f"  {_fmt(ae.get('params_decoder'))} decoder parameters"
        + (f"; {ae['motion_share']} of the loss on the pixels that move." if ae.get("motion_share") else "."),
        "- Teacher: rectified flow with diffusion forcing (independent noise level per frame, logit-normal,",
        f"  {int(100 * state.get('hparams', {}).get('context_prob', 0.5))}% of frames at a small context level), key dropout "
        f"{_fmt(tm.get('key_dropout'))}, clips of {_fmt(tm.get('clip_frames'))} frames",
        f"  (window {cfg.window}: the window slides in training), AdamW lr {_fmt(tm.get('lr'))} warmup + cosine,",
        f"  EMA {_fmt(tm.get('ema_decay'))}; {_fmt(tm.get('steps'))} steps, batch {_fmt(tm.get('batch'))},",
        f"  {_fmt(tm.get('steps_per_second'))} steps/s on {_fmt(tm.get('device'))}.",
        *_budget_lines(tm),
        "",
        "## Measured",
        "",
        "| figure | value |",
        "|---|---|",
        f"| autoencoder held-out PSNR | {_fmt(ae.get('heldout_psnr_db'))} dB ({_fmt(ae.get('heldout_frames'))} frames, unseen seeds) |",
        *(
            [
                f"| autoencoder held-out PSNR on the pixels that move | {_fmt(ae['heldout_moving_psnr_db'])} dB |"
            ]
            if ae.get("heldout_moving_psnr_db") is not None
            else []
        ),
        f"| decoder time per frame, CPU (eager, fp32, batch 1) | {_fmt(ae.get('decode_ms_per_frame_cpu'))} ms |",
        f"| decoder time per frame, CUDA (eager, fp32, batch 1) | {_fmt(ae.get('decode_ms_per_frame_cuda'))} ms |",
        f"| teacher final train loss / EMA validation loss | {_fmt(tm.get('final_loss'))} / {_fmt(tm.get('ema_val_loss'))} |",
    ]
    if ev:
        base = ev.get("baseline_copy_last", {})
        lines += [
            "",
            f"Fidelity against the real game (`worldsim eval --quick`, {_fmt(ev.get('device'))}): neural world vs GameWorld on",
            "the same explorer keys from the same real start frames; baseline = copy the last real frame.",
            "",
            "| horizon (frames) | PSNR (dB) | SSIM | copy-last PSNR | copy-last SSIM |",
            "|---|---|---|---|---|",
        ]
        for k in ev.get("psnr", {}):
            lines.append(
                f"| {k} | {ev['psnr'][k]} | {ev['ssim'][k]} | {base.get('psnr', {}).get(k)} | {base.get('ssim', {}).get(k)} |"
            )
        idle = ev.get("idle", {})
        if idle:
            lines += [
                "",
                f"Idle ({idle.get('frames')} frames, no keys): brightness in range {idle.get('in_range')}, collapsed "
                f"{idle.get('collapsed')}, PSNR of the last frame vs the (unchanging) real frame {idle.get('psnr_last_vs_start')} dB.",
            ]
    else:
        how = "--data DIR" if data else "--quick"
        lines += ["", f"Fidelity: not measured yet (run `worldsim eval --checkpoint ... {how}`)."]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        *(
            [
                f"OUT=out ENV={data.get('env')} NAME={out_path.stem} PRESET={cfg.name} scripts/own_game_gpu.sh all"
                "   # one GPU: collect, autoencoder, teacher, export, eval",
                f"worldsim eval --checkpoint {out_path.stem} --data DIR   # DIR: a dataset of the same env (worldsim collect)",
            ]
            if data and data.get("env")
            else [
                f"OUT=out PRESET={cfg.name} scripts/train_gpu.sh   # one GPU: autoencoder, teacher, export, quick eval",
                f"worldsim eval --checkpoint {out_path.stem} --quick   # once it is in checkpoints/",
            ]
        ),
        "```",
        "",
    ]
    card = out_path.with_suffix(".md")
    common.atomic_write_text("\n".join(lines), card)
    return card


def bf16_path(int8_path: str | Path) -> Path:
    """Where `--int8` puts the bf16 export the 8-bit file is made from: NAME-bf16.safetensors beside it."""
    p = Path(int8_path)
    return p.with_name(f"{p.stem}-bf16{p.suffix or '.safetensors'}")


def _read_json(path: str | None, flag: str) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{flag} {path}: cannot read it as JSON ({e}); pass the file the run wrote") from None


def run(args: argparse.Namespace) -> int:
    """`worldsim train export`: print one line per file written."""
    if args.card_only and args.int8:
        raise UserError("--card-only rewrites one card; drop --int8 (or --card-only to export again)")
    if args.int8_group is not None and (not args.int8 or args.int8_group < 1):
        raise UserError(
            f"--int8-group {args.int8_group}: a column count >= 1 (e.g. 32) for the 8-bit file; it needs --int8"
        )
    if args.context_noise is not None and not 0.0 <= args.context_noise < 1.0:
        raise UserError(f"--context-noise {args.context_noise}: a noise level in [0, 1), e.g. 0.1")
    if args.card_only and args.context_noise is not None:
        raise UserError("--card-only rewrites a card; --context-noise changes the file: drop one of them")
    extra = {}
    if args.autoencoder_metrics:
        extra["autoencoder"] = _read_json(args.autoencoder_metrics, "--autoencoder-metrics")
    ev = _read_json(args.eval_json, "--eval-json")
    if not Path(args.state).is_file():
        raise UserError(
            f"STATE {args.state}: no such file; pass the teacher.pt of a `worldsim train teacher` run"
        )
    if args.card_only:
        state = resume.load_train_state(args.state)
        metrics = {
            "teacher": state.get("metrics", {}),
            "autoencoder": state.get("autoencoder_metrics", {}),
            **extra,
        }
        if ev:
            metrics["eval"] = ev
        card = write_card(
            Path(args.out), ModelConfig.from_dict(state["config"]), state, metrics, seeds=args.seeds
        )
        print(f"wrote {card}")
        return 0
    out = bf16_path(args.out) if args.int8 else Path(args.out)
    export(args.state, out, train_metrics=extra, eval_result=ev, seeds=args.seeds,
           dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32,
           int8_path=args.out if args.int8 else None, int8_group=args.int8_group,
           context_noise=args.context_noise)  # fmt: skip
    for path in [out] + ([Path(args.out)] if args.int8 else []):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB) and its card {path.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.train.export", description=__doc__.splitlines()[0])
    add_export_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (UserError, OSError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
