"""Self-forcing train state: load the teacher (train state or shipped checkpoint), save and resume the
student run atomically, export the EMA student as a shipped checkpoint with its card."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from worldsim.checkpoint import load_checkpoint, save_checkpoint
from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.model.config import ModelConfig
from worldsim.model.dit import DiT
from worldsim.train import common
from worldsim.train.export import EVAL_KEYS, START_SEEDS, _storage, budget_minutes, encoded_starts, write_card

log = logging.getLogger(__name__)

STATE_FILE = "self_forcing.pt"
HPARAMS = (
    "context", "critic_steps", "critic_lr", "lr", "batch", "frames", "context_frames", "steps_per_frame",
    "regression_weight", "guidance", "t_min", "t_max", "context_max", "ema_decay", "grad_clip", "seed",
    "rollout_frames", "chunk", "idle_fraction", "context_noise", "data", "source", "regression_horizon",
    "idle_dmd", "idle_rollout_frames", "stats_weight", "hold_weight",
)  # fmt: skip


def _fp32(state: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_teacher(source, device: torch.device) -> tuple[ModelConfig, DiT, Autoencoder, dict]:
    """(config, frozen teacher DiT, frozen autoencoder, info) from a resumed self-forcing state (dict),
    a teacher train state (`teacher.pt`) or a shipped checkpoint (name or .safetensors path)."""
    if isinstance(source, dict):  # resuming: the teacher travels in the state
        cfg = ModelConfig.from_dict(source["config"])
        dit_state, ae_state, info = source["teacher"], source["autoencoder"], source["teacher_info"]
    elif str(source).endswith(".pt"):
        state = common.load_state(source, flag="--teacher")
        if state.get("kind") != "teacher":
            raise UserError(f"--teacher {source} is not a teacher train state (kind={state.get('kind')!r})")
        cfg = ModelConfig.from_dict(state["config"])
        dit_state, ae_state = state["ema"], state["autoencoder"]
        info = {"source": str(source), "metrics": state.get("metrics", {}), "hparams": state.get("hparams", {}),
                "autoencoder_metrics": state.get("autoencoder_metrics", {}),
                "start_frames": state.get("start_frames", {}).get("frames")}  # fmt: skip
    else:
        ckpt = load_checkpoint(source)
        cfg = ckpt.config
        dit_state, ae_state = ckpt.float_state("dit"), ckpt.float_state("autoencoder")
        m = ckpt.metrics
        info = {"source": str(ckpt.path), "sha256": ckpt.sha256, "metrics": m.get("teacher", {}),
                "hparams": {}, "autoencoder_metrics": m.get("autoencoder", {}),
                "start_latents": ckpt.tensors.get("start", {}).get("latents")}  # fmt: skip
    teacher, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    teacher.load_state_dict(_fp32(dit_state))
    ae.load_state_dict(_fp32(ae_state))
    teacher = teacher.to(device).eval().requires_grad_(False)
    ae = ae.to(device).eval().requires_grad_(False)
    return cfg, teacher, ae, info


def load_student(source, cfg: ModelConfig) -> tuple[dict, dict | None]:
    """(float DiT state dict, cumulative budget) of checkpoint `source` (--init), checked against the
    teacher's config. The budget is what the student's earlier runs cost (None for a checkpoint that is
    not a student); a student exported before budgets were recorded counts as one run of its metrics."""
    ckpt = load_checkpoint(source)
    theirs, ours = ckpt.config, cfg
    for k in ("width", "depth", "heads", "patch_size", "sinks", "key_names"):
        if getattr(theirs, k) != getattr(ours, k):
            raise UserError(
                f"--init {source}: its {k}={getattr(theirs, k)!r} differs from the teacher's "
                f"({getattr(ours, k)!r}); pass a student distilled from a teacher of the same preset"
            )
    if theirs.autoencoder != ours.autoencoder:
        raise UserError(
            f"--init {source}: its autoencoder differs from the teacher's; use a matching teacher"
        )
    log.info("--init %s: the student starts from its weights", ckpt.path)
    return ckpt.float_state("dit"), prior_budget(ckpt.metrics.get("self_forcing") or {})


def prior_budget(sf: dict) -> dict | None:
    """The cumulative budget in a student's self-forcing metrics (older exports: their one run)."""
    if sf.get("budget"):
        return sf["budget"]
    if not sf.get("generator_steps"):
        return None
    steps = int(sf["generator_steps"])
    return {"steps": steps, "clips": steps * int(sf.get("batch") or 0), "runs": 1,
            "device_minutes": {str(sf.get("device")): round(float(sf.get("train_seconds_this_run", 0)) / 60, 2)}}  # fmt: skip


def save_state(path, args, cfg, student, ema, critic, opt_g, opt_c, ae, teacher, teacher_info, step,
               history, metrics=None, starts=None) -> None:  # fmt: skip
    common.atomic_save(
        {
            "kind": "self_forcing",
            "hparams": {k: getattr(args, k) for k in (*HPARAMS, "steps")},
            "step": step,
            "config": cfg.to_dict(),
            "model": common.unwrap(student).state_dict(),
            "ema": ema.state_dict(),
            "critic": common.unwrap(critic).state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_c": opt_c.state_dict(),
            "autoencoder": ae.state_dict(),
            "teacher": teacher.state_dict(),
            "teacher_info": teacher_info,
            "history": history,
            "metrics": metrics or {},
            **({} if starts is None else {"start_frames": starts}),
        },
        path,
    )


def student_starts(state: dict, ae: Autoencoder) -> tuple[torch.Tensor, int]:
    """The start latents a student ships with and their count: the first frames of its dataset's
    training episodes (a `--data` run), else its teacher's (a dataset teacher's recorded episode starts,
    a checkpoint's own start latents: the same autoencoder), else the default level's spawns."""
    info = state["teacher_info"]
    frames = state.get("start_frames", {}).get("frames")
    if frames is None:
        frames = info.get("start_frames")
    if frames is None and info.get("start_latents") is not None:
        z = info["start_latents"].float()
        return z, len(z)
    return encoded_starts(ae, frames, START_SEEDS)


def export_student(state_path: str | Path, out_path: str | Path, *, eval_result: dict | None = None) -> Path:
    """Write the EMA student as a shipped checkpoint (bf16 matrices) and its card (`.md` beside it)."""

    state = common.load_state(state_path, flag="state")
    if state.get("kind") != "self_forcing":
        raise UserError(f"{state_path} is not a self-forcing train state (kind={state.get('kind')!r})")
    cfg = ModelConfig.from_dict(state["config"])
    ae = Autoencoder(cfg.autoencoder)
    ae.load_state_dict(state["autoencoder"])
    info = state["teacher_info"]
    z, seeds = student_starts(state, ae)
    metrics = {"teacher": info.get("metrics", {}), "autoencoder": info.get("autoencoder_metrics", {}),
               "self_forcing": state.get("metrics", {}), "teacher_source": info.get("source")}  # fmt: skip
    if eval_result:
        metrics["eval"] = {k: eval_result[k] for k in EVAL_KEYS if k in eval_result}
    out_path = Path(out_path)
    save_checkpoint(out_path, config=cfg, dit=_storage(state["ema"], torch.bfloat16),
                    autoencoder=_storage(ae.state_dict(), torch.bfloat16), start_latents=z,
                    metrics=metrics)  # fmt: skip
    # The card: the teacher's card layout (how the teacher was trained), then the student's section.
    card_state = {"metrics": info.get("metrics", {}), "hparams": info.get("hparams", {}), "ema": state["ema"]}
    card = write_card(out_path, cfg, card_state, metrics, seeds=seeds)
    sf = state.get("metrics", {})
    lines = [
        "## Student (self-forcing distillation, docs/design.md §7.3)",
        "",
        f"Distilled from `{info.get('source')}` with {sf.get('context')} context "
        f"({'self-forcing: its own KV-cached rollouts' if sf.get('context') == 'self' else 'baseline: true history'}),",
        f"{sf.get('steps_per_frame')} steps per frame; DMD with the teacher as real score and a critic "
        f"({sf.get('critic_steps_per_generator_step')} critic steps per generator step),",
        f"regression weight {sf.get('regression_weight')}"
        + (
            f" decaying as exp(-depth / {sf['regression_horizon']:g}) in moving rollouts"
            if sf.get("regression_horizon")
            else ""
        )
        + (f", frame statistics weight {sf['stats_weight']:g}" if sf.get("stats_weight") else "")
        + (f", hold weight {sf['hold_weight']:g} on frames made with no key" if sf.get("hold_weight") else "")
        + f"; {sf.get('generator_steps')} generator steps, batch "
        f"{sf.get('batch')}, {sf.get('context_frames')} context + {sf.get('rollout_frames')} rollout frames"
        + (
            f" (streamed in chunks of {sf.get('chunk')}, {sf.get('idle_fraction')} of them idle"
            + (
                f", idle ones of {sf['idle_rollout_frames']} frames"
                if sf.get("idle_rollout_frames") not in (None, sf.get("rollout_frames"))
                else ""
            )
            + (f", DMD weight {sf['idle_dmd']:g} on the idle ones" if sf.get("idle_dmd", 1.0) != 1.0 else "")
            + ")"
            if sf.get("streamed")
            else ""
        )
        + f", context noise {sf.get('context_noise')}, data {(sf.get('data') or {}).get('path') or 'the game'}, "
        f"{sf.get('steps_per_second')} steps/s on {sf.get('device')}; final losses {sf.get('final')}"
        + (" (a state saved mid-run)." if sf.get("in_progress") else "."),
        "",
    ]
    b = sf.get("budget")
    if b:
        lines[-1:-1] = [f"- Student budget, all runs together: {b.get('steps')} generator steps, "
                        f"{b.get('clips')} rollouts, {budget_minutes(b)}, {b.get('runs')} run(s).", ""]  # fmt: skip
    ev = metrics.get("eval", {})
    for key in ("action_accuracy", "loop", "long_run"):
        if ev.get(key):
            v = ev[key]
            if key == "long_run":
                v = {k: v[k] for k in ("frames", "nan", "in_range", "minutes_in_range") if k in v}
            lines.append(f"- {key}: `{v}`")
    text = card.read_text()
    common.atomic_write_text(text.replace("## Reproduce", "\n".join(lines) + "\n## Reproduce"), card)
    log.info("exported %s (%.2f MiB) and its card", out_path, out_path.stat().st_size / 2**20)
    return out_path


def default_frames(cfg: ModelConfig) -> int:
    return cfg.window + max(1, cfg.window // 2)


def export_main(argv: list[str] | None = None) -> int:
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m worldsim.train.sf_state", description=export_student.__doc__)
    p.add_argument("state", help="self_forcing.pt from `worldsim train self-forcing`")
    p.add_argument("out", help="output .safetensors (its card is written beside it)")
    p.add_argument("--eval-json", default=None, help="a `worldsim eval` JSON to put in the card")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ev = json.loads(Path(a.eval_json).read_text()) if a.eval_json else None
        export_student(a.state, a.out, eval_result=ev)
    except (UserError, OSError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(export_main())
