"""A neural world against held-out recorded episodes of a dataset (`worldsim eval --data DIR`).

Each held-out clip (`ds.split("heldout")`: no trainer reads them) gives the world its first
`context_frames` real frames and keys; the world then runs open-loop on the recorded keys for the rest
of the clip, and every generated frame is scored against the recorded one at the same horizon, beside
copy-last (the last real context frame repeated). A clip stops counting at an episode reset (the model
cannot know the new episode's first frame: recorded.py says where resets come from). scores.py gives the
verdicts, as for the game eval, without the idle run (a recording has no true still view to hold).

The JSON has the game eval's psnr, ssim, baseline_copy_last, margin_over_copy_last, verdict, pass
(horizons, motion, controllability, all), motion, contrast, controllability and action_accuracy (runner.py's
docstring says what each holds), and:
- controllability: rows of shuffled keys are the recorded keys of another held-out clip (rolled by one
  within a batch); a clip counts at a horizon once its shuffled keys differed from its own there.
- action_accuracy: the dataset's IDM (dataset_idm.py) on recorded pairs (real) and generated pairs
  (generated) of the scored frames, labelled with the recorded keys; chance: what ignoring the frames
  scores (the majority key state, the most frequent key row); one_hot says exact = argmax accuracy.
- clips {horizon: held-out clips scored there}; horizons_dropped {horizon: why}.
- episode_resets: source (where resets come from), clips_with_reset (among the scored clips).
- dataset: path, manifest (meta.json without the shard list), heldout_clips, scored_clips, clip_frames.
- checkpoint, device, steps, context_frames, seconds; files {plot, video}.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from worldsim.errors import UserError
from worldsim.evaluation import plots, scores
from worldsim.evaluation.dataset_idm import get_dataset_idm, label_keys
from worldsim.evaluation.idm import accuracy, chance_accuracy
from worldsim.evaluation.recorded import is_one_hot, load_clips, manifest
from worldsim.metrics import psnr, ssim

log = logging.getLogger(__name__)

SHUFFLE = "recorded keys of the held-out clip before it (rolled by one within each batch of clips)"
CURVES = ("psnr", "ssim", "base_psnr", "base_ssim", "shuffled_psnr", "motion_real", "motion_gen", "std_real",
          "std_gen", "gray_err")  # fmt: skip


@dataclass
class DataEvalConfig:
    context_frames: int = 4  # real frames of each clip the world starts from
    horizons: tuple[int, ...] = (1, 8, 32, 128)  # those past the clip's end are dropped (and listed)
    episodes: int | None = None  # held-out clips scored (None: all of them)
    batch: int = 64  # clips run side by side
    controllability: bool = True  # as many rows again on another clip's keys
    action: bool = True  # action following with the dataset's IDM
    idm_path: str | None = None  # default: next to the dataset (trained there when missing)
    idm_steps: int = 1500
    video_sequences: int = 2

    def __post_init__(self) -> None:
        if self.context_frames < 1 or self.batch < 1 or self.idm_steps < 1:
            raise ValueError(
                f"context_frames, batch and idm_steps must be >= 1, got {self.context_frames}, "
                f"{self.batch}, {self.idm_steps}"
            )
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be positive frame counts, got {self.horizons}")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")

    @property
    def groups(self) -> int:
        """Row groups of the world: the recorded keys, and the shuffled keys when scored."""
        return 2 if self.controllability else 1


def scored_clips(ds, cfg: DataEvalConfig):
    """The held-out clip indices this run scores (the first `episodes`)."""
    held = ds.split("heldout")
    return held if cfg.episodes is None else held[: cfg.episodes]


def _settled(ds, cfg: DataEvalConfig) -> DataEvalConfig:
    """`cfg` as it runs on `ds`: shuffling keys across clips needs two clips."""
    if cfg.controllability and len(scored_clips(ds, cfg)) < 2:
        return dataclasses.replace(cfg, controllability=False)
    return cfg


def world_batch(ds, cfg: DataEvalConfig) -> int:
    """Games the world under test must hold for `evaluate_dataset(ds, cfg)`."""
    cfg = _settled(ds, cfg)
    return cfg.groups * min(cfg.batch, len(scored_clips(ds, cfg)))


def check_match(world, ds, checkpoint: str | None) -> None:
    """The world must make the dataset's frames from the dataset's keys: a one-line error otherwise.

    Frames of another size are refused, not resized: trainers take the frame size from the dataset, so
    another size means a model of other data, and PSNR at another resolution is another measure."""
    name = checkpoint or "the checkpoint"
    if list(world.key_names) != list(ds.key_names):
        raise UserError(
            f"--checkpoint {name} has keys {list(world.key_names)} but --data {ds.path} has keys "
            f"{list(ds.key_names)}; score a checkpoint trained on this dataset (train with --data {ds.path})"
        )
    if (world.height, world.width) != (ds.height, ds.width):
        raise UserError(
            f"--checkpoint {name} makes {world.width}x{world.height} frames but --data {ds.path} holds "
            f"{ds.width}x{ds.height}; score a checkpoint trained on this dataset, or collect at --size "
            f"{world.width}"
        )


def _horizons(cfg: DataEvalConfig, clip_frames: int) -> tuple[tuple[int, ...], dict[str, str]]:
    """The horizons a clip of `clip_frames` frames reaches after the context, and why the rest are dropped."""
    if cfg.context_frames >= clip_frames:
        raise UserError(
            f"--context {cfg.context_frames} leaves no frame to score in clips of {clip_frames} frames; "
            f"pass --context < {clip_frames}"
        )
    longest = clip_frames - cfg.context_frames
    keep = tuple(h for h in sorted(set(cfg.horizons)) if h <= longest)
    dropped = {
        str(h): f"past the clip's end ({longest} frames after the context)"
        for h in cfg.horizons
        if h > longest
    }
    if not keep:
        raise UserError(
            f"--horizons {list(cfg.horizons)}: clips of {clip_frames} frames reach {longest} frames after "
            f"--context {cfg.context_frames}; pass horizons <= {longest} or collect longer clips (--frames)"
        )
    return keep, dropped


@torch.no_grad()
def _run_batch(world, frames, keys, resets, cfg: DataEvalConfig, T: int, idm, one_hot, key_names):
    """One batch of R clips: curves `[T,R]` (NaN after a reset), views-differ `[T,R]`, IDM logits and
    labels of the scored pairs, and the first clips' real | generated frames for the video."""
    R, k, dev = frames.shape[0], cfg.context_frames, world.device
    G = cfg.groups
    slots = None if world.batch_size == G * R else list(range(G * R))
    world.reset_from_frames(frames[:, :k].repeat(G, 1, 1, 1, 1), keys[:, :k].repeat(G, 1, 1), slots=slots)
    ok = resets[:, k : k + T].cumsum(1).eq(0).T  # [T,R]: no reset since the last context frame
    curves = {n: torch.full((T, R), float("nan"), device=dev) for n in CURVES}
    differ = torch.zeros(T, R, dtype=torch.bool, device=dev)
    start = prev_real = prev_gen = frames[:, k - 1]
    seen = torch.zeros(R, dtype=torch.bool, device=dev)
    logits_real, logits_gen, labels, valid, video = [], [], [], [], []
    V = min(cfg.video_sequences, R)
    for i in range(T):
        real, kt = frames[:, k + i], keys[:, k + i]
        rows = [kt]
        if G == 2:
            shuffled = kt.roll(1, 0)
            seen |= (shuffled != kt).any(1)
            differ[i] = seen & ok[i]
            rows.append(shuffled)
        out = world.step(torch.cat(rows), slots=slots)
        gen = out[:R]
        c = {"psnr": psnr(gen, real), "ssim": ssim(gen, real), "base_psnr": psnr(start, real),
             "base_ssim": ssim(start, real),
             "motion_real": (real.float() - prev_real.float()).abs().flatten(1).mean(1),
             "motion_gen": (gen.float() - prev_gen.float()).abs().flatten(1).mean(1),
             "std_real": scores.frame_contrast(real), "std_gen": scores.frame_contrast(gen),
             "gray_err": (scores.gray_mean(gen) - scores.gray_mean(real)).abs()}  # fmt: skip
        if G == 2:
            c["shuffled_psnr"] = psnr(out[R:], real)
        for n, v in c.items():
            curves[n][i] = torch.where(ok[i], v, float("nan"))
        if idm is not None:
            logits_real.append(idm(prev_real, real))
            logits_gen.append(idm(prev_gen, gen))
            labels.append(label_keys(kt, key_names, one_hot))
            valid.append(ok[i])
        prev_real, prev_gen = real, gen
        video.append(torch.cat([real[:V], gen[:V]], dim=2).flatten(0, 1).cpu().numpy())  # [V*H, 2W, 3]
    action = None
    if idm is not None:
        action = tuple(torch.cat(x).cpu() for x in (logits_real, logits_gen, labels, valid))
    return {n: v.cpu() for n, v in curves.items()}, differ.cpu(), action, video


def evaluate_dataset(
    world,
    ds,
    cfg: DataEvalConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> dict:
    """Score `world` (with `reset_from_frames`; `world_batch(ds, cfg)` games) on the held-out clips of
    `ds` (a `worldsim.data.Dataset`); the module docstring lists the result."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    check_match(world, ds, checkpoint)
    cfg = _settled(ds, cfg)
    clips = scored_clips(ds, cfg)
    if world.batch_size < world_batch(ds, cfg):
        raise ValueError(f"the world steps {world.batch_size} games; this run needs {world_batch(ds, cfg)}")
    horizons, dropped = _horizons(cfg, ds.frames)
    T, dev = max(horizons), world.device
    one_hot = is_one_hot(ds)
    idm, idm_info = (None, None)
    if cfg.action:
        idm, idm_info = get_dataset_idm(
            ds, path=cfg.idm_path, steps=cfg.idm_steps, device=dev, progress=progress
        )
    parts, differ, action, video, with_reset, source = [], [], [], None, 0, None
    batches = [clips[i : i + cfg.batch] for i in range(0, len(clips), cfg.batch)]
    for chunk in tqdm(batches, desc="eval --data", disable=not progress, dynamic_ncols=True):
        frames, keys, resets, source = load_clips(ds, chunk, one_hot, dev)
        with_reset += int(resets[:, cfg.context_frames :].any(1).sum())
        c, d, a, v = _run_batch(world, frames, keys, resets, cfg, T, idm, one_hot, ds.key_names)
        parts.append(c)
        differ.append(d)
        action.append(a)
        video = video or v
    curves = {n: torch.cat([p[n] for p in parts], 1) for n in CURVES}  # [T, clips]
    differ_all = torch.cat(differ, 1)
    scored = (~curves["psnr"].isnan()).sum(1)  # [T] clips scored at each frame
    for h in [h for h in horizons if scored[h - 1] == 0]:
        dropped[str(h)] = "every scored clip reset its episode before it"
    horizons = tuple(h for h in horizons if scored[h - 1] > 0)
    if not horizons:
        raise UserError(f"--data {ds.path}: every held-out clip resets its episode right after the context")

    p, s, bp, bs, margin = scores.horizon_section(curves, horizons)
    motion = scores.motion_section(curves["motion_real"], curves["motion_gen"], horizons)
    contrast = scores.contrast_section(curves["std_real"], curves["std_gen"], curves["gray_err"], horizons)
    control = None
    if cfg.controllability:
        control = scores.controllability_section(
            curves["psnr"], curves["shuffled_psnr"], differ_all, horizons, SHUFFLE
        )
    verdict, passed = scores.horizon_verdicts(margin, motion, control)
    ok = {"horizons": passed, "idle": None, "motion": motion["pass"],
          "controllability": None if control is None else control["pass"]}  # fmt: skip
    ok["all"] = all(passed.values()) and motion["pass"] and ok["controllability"] is not False
    result = {
        "psnr": p, "ssim": s, "baseline_copy_last": {"psnr": bp, "ssim": bs}, "margin_over_copy_last": margin,
        "verdict": verdict, "pass": ok, "motion": motion, "contrast": contrast, "controllability": control,
        "idle": None,
        "action_accuracy": None, "loop": None, "long_run": None,
        "clips": {str(h): int(scored[h - 1]) for h in horizons}, "horizons_dropped": dropped,
        "episode_resets": {"source": source, "clips_with_reset": with_reset},
        "dataset": {"path": str(ds.path), "manifest": manifest(ds), "heldout_clips": len(ds.split("heldout")),
                    "scored_clips": len(clips), "clip_frames": ds.frames},
        "checkpoint": checkpoint, "device": str(dev), "steps": getattr(world, "steps", None),
        "sequences": len(clips), "context_frames": cfg.context_frames, "seconds": None,
    }  # fmt: skip
    if idm is not None:
        lr, lg, lab, val = (torch.cat([a[j] for a in action]) for j in range(4))
        result["action_accuracy"] = {
            "real": accuracy(lr, lab, val, one_hot),
            "generated": accuracy(lg, lab, val, one_hot),
            "chance": chance_accuracy(lab, val),
            "frames": T,
            "one_hot": one_hot,
            "idm": {k: idm_info.get(k) for k in ("size", "heldout_real", "path", "dataset")},
        }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{checkpoint}: against {len(clips)} held-out clips of {Path(ds.path).name}"
        plots.plot_fidelity(curves, result, out / "psnr_vs_horizon.png", title=title)
        result["files"] = {
            "plot": str(out / "psnr_vs_horizon.png"),
            "video": str(plots.write_video(video, out / "real_vs_generated.mp4")),
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
