"""NeuralWorld vs GameWorld on the same seeded explorer keys, from the same real start frames (docs/design.md §11).

The world under test holds `EvalConfig.world_batch` games, all started from the same real context: rows
[0, B) follow the explorer's keys (B = sequences), rows [B, 2B) get no keys (idle), rows [2B, 3B) get the
explorer keys of another sequence (controllability; with >= 2 sequences). scores.py turns the curves
into verdicts; probes.py holds the loop test and the long run; plots.py draws them.

The JSON (`evaluate`'s result; horizons and idle frames are string keys, PSNR in dB):
- psnr, ssim: {horizon: mean over sequences} of the model against the real frame at that horizon.
- baseline_copy_last: {psnr, ssim}, the same for repeating the last real context frame.
- margin_over_copy_last: {horizon: psnr - copy-last psnr}; >= 1 dB passes.
- verdict: {horizon: one line, "pass: ..." or "FAIL (what fails): ..."}: the margin, the motion ratio
  over the frames leading to the horizon, and controllability at it.
- pass: {horizons: {horizon: bool}, idle, motion, controllability, all}.
- motion: real_mean_abs_diff, generated_mean_abs_diff (levels 0-255, to the previous frame of the same
  world, from frame 2 on), ratio (generated / real; 0.8-1.2 passes), ratio_by_horizon {horizon: ratio
  over the frames since the previous horizon; null at 1}, band, pass, verdict.
- contrast: real_std, generated_std (each frame's pixel std, levels 0-255), ratio (generated / real),
  ratio_by_horizon {horizon: over the frames up to it since the previous one}, brightness_error and
  brightness_error_by_horizon (mean |gray level of the generated frame - the real one's|), verdict;
  informational (a washed-out view that cannot place itself scores well in PSNR).
- controllability: psnr_true_keys, psnr_shuffled_keys, margin_db {horizon: true - shuffled; > 0 passes},
  sequences {horizon: how many sequences' real views differ at that horizon between the true and the
  shuffled keys (the real game is run on both): the figures average over those}, shuffle (how), pass,
  verdict; null with one sequence or `controllability=False`.
- idle: frames, psnr_last (the last idle frame against the true, unchanged view, mean over sequences;
  >= 30 passes), psnr_last_min, drift (mean gray level of the last drift_frames frames minus the true
  view's, gray levels 0-255, mean over sequences), drift_abs (mean |drift|; <= 3 passes), psnr_curve
  {idle frame: PSNR}, pass, verdict; kept for older readers: psnr_last_vs_start (= psnr_last),
  mean/std_first/last, real_mean_range, real_std, in_range and collapsed (the old pixel-statistics
  check, which a view dissolving into stripes passes).
- action_accuracy: real / generated {per_key, exact, pairs}, frames, idm (idm.py); null when skipped.
- loop: frames_each_way, turn_180_and_back / walk_and_back {psnr_end_vs_real, ...} (probes.py).
- long_run: frames, fps, nan, in_range, minutes_in_range, per_minute [...] (probes.py).
- checkpoint, device, steps, sequences, context_frames, idle_frames, level, seed, seconds,
  seconds_by_part {rollouts, loop, long_run, files} (where the time went); files {plot, video, loop,
  long_run} when written.

With no progress bar (not a terminal: a run in the background) it logs where it is every
`LOG_EVERY` frames instead, so a log shows a slow run moving.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from worldsim.data import Explorer
from worldsim.evaluation import plots, scores
from worldsim.evaluation.idm import accuracy, effective_keys, get_idm
from worldsim.evaluation.probes import FPS, long_run, loop_test
from worldsim.game import GameWorld
from worldsim.metrics import psnr, ssim

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    sequences: int = 64  # B: explorer key sequences run side by side (the full eval is meant for a GPU)
    horizons: tuple[int, ...] = (1, 8, 32, 128, 512)
    context_frames: int = 4  # real frames the neural world starts from
    idle_frames: int = 2000
    seed: int = 0
    video_sequences: int = 2  # rows of the real | generated video
    action: bool = True  # action following with the inverse-dynamics model (idm.py)
    idm_path: str | None = None  # the cached IDM (default runs/idm/...; trained there when missing)
    idm_steps: int = 1500  # training batches of the IDM when it is not cached yet
    loop: bool = True  # the loop test (turn 180 degrees and back; walk forward and back)
    loop_sequences: int = 8  # games per loop (at most `sequences`)
    long_frames: int = 18_000  # frames of the long run (0: none)
    long_sequences: int = 16  # games of the long run (at most the world's games)
    controllability: bool = True  # B more games on shuffled keys (needs >= 2 sequences)

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.context_frames < 1:
            raise ValueError("EvalConfig.sequences and context_frames must be >= 1")
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"EvalConfig.horizons must be positive frame counts, got {self.horizons}")
        if self.idle_frames < 1:
            raise ValueError(f"EvalConfig.idle_frames must be >= 1, got {self.idle_frames}")
        if self.loop_sequences < 1 or self.long_sequences < 1:
            raise ValueError(
                f"EvalConfig.loop_sequences and long_sequences must be >= 1, got "
                f"{self.loop_sequences} and {self.long_sequences}"
            )
        if self.long_frames < 0:
            raise ValueError(f"EvalConfig.long_frames must be >= 0 (0 = no long run), got {self.long_frames}")
        if self.idm_steps < 1:
            raise ValueError(f"EvalConfig.idm_steps must be >= 1, got {self.idm_steps}")

    @classmethod
    def quick(cls, seed: int = 0) -> EvalConfig:
        """4 sequences to 128 frames and 300 idle frames (10 s): under 3 minutes on 2 CPU cores."""
        return cls(
            sequences=4, horizons=(1, 8, 32, 128), context_frames=4, idle_frames=300, seed=seed,
            long_frames=0, loop_sequences=2,
        )  # fmt: skip

    @property
    def shuffled(self) -> bool:
        """Whether the run holds the shuffled-key rows: rolling keys across sequences needs two."""
        return self.controllability and self.sequences > 1

    @property
    def world_batch(self) -> int:
        """Games the world under test must hold: explorer rows, idle rows, shuffled-key rows."""
        return (3 if self.shuffled else 2) * self.sequences


def _start(game, neural, explorer, cfg: EvalConfig, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reset the game, walk `context_frames` real frames with explorer keys, start every row group of the
    neural world on them (one batched step then serves the explorer, idle and shuffled-key runs)."""
    frames = [game.reset(seeds)]
    keys = [torch.zeros(len(seeds), game.num_keys, dtype=torch.bool, device=game.device)]
    for _ in range(cfg.context_frames - 1):
        k = explorer.act(game.blocked)
        keys.append(k)
        frames.append(game.step(k))
    ctx = torch.stack(frames, 1)  # [B,F,H,W,3]
    ctx_keys = torch.stack(keys, 1)  # [B,F,K]
    groups = cfg.world_batch // cfg.sequences
    neural.reset_from_frames(
        ctx.repeat(groups, 1, 1, 1, 1).to(neural.device), ctx_keys.repeat(groups, 1, 1).to(neural.device)
    )
    return ctx, ctx_keys


def _at_context(game, seeds: list[int], ctx_keys: torch.Tensor):
    """`game` reset to `seeds` and walked through the context keys `[G,F,K]` again: the same real
    context as the first run (the game is deterministic)."""
    game.reset(seeds)
    for i in range(1, ctx_keys.shape[1]):
        game.step(ctx_keys[:, i])
    return game


SHUFFLE = "sequences rolled by one: each gets the keys of the sequence before it"
LOG_EVERY = 250  # frames between log lines when there is no progress bar


@torch.no_grad()
def evaluate(
    neural,
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> dict:
    """Fidelity, idle, motion and controllability of `neural` (a World of `cfg.world_batch` games with
    `reset_from_frames`, e.g. a NeuralWorld) against the real game on the default level."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    B, dev = cfg.sequences, neural.device
    if neural.batch_size != cfg.world_batch:
        raise ValueError(
            f"the neural world steps {neural.batch_size} games; evaluate needs {cfg.world_batch} "
            f"(explorer rows, idle rows{', shuffled-key rows' if cfg.shuffled else ''}: {B} each)"
        )

    def new_game(batch: int) -> GameWorld:
        return GameWorld(batch_size=batch, size=(neural.height, neural.width), level="default", device=dev)

    game = new_game(B)
    seeds = [cfg.seed + i for i in range(B)]
    explorer = Explorer(B, game.num_keys, cfg.seed, dev)
    ctx, ctx_keys = _start(game, neural, explorer, cfg, seeds)
    # the real game on the shuffled keys too: where its view is the true one, no world can tell them apart
    if cfg.shuffled:
        game_shuffled = _at_context(new_game(B), seeds, ctx_keys)
    start = ctx[:, -1]
    idm = None
    if cfg.action:
        idm, idm_info = get_idm(
            (neural.height, neural.width), neural.key_names, path=cfg.idm_path, device=dev,
            steps=cfg.idm_steps, progress=progress,
        )  # fmt: skip
        logits_real, logits_gen, act_keys, act_valid = [], [], [], []

    T, n, F = max(cfg.horizons), max(max(cfg.horizons), cfg.idle_frames), cfg.idle_frames
    names = (
        "psnr",
        "ssim",
        "base_psnr",
        "base_ssim",
        "shuffled_psnr",
        "views_differ",
        "motion_real",
        "motion_gen",
        "std_real",
        "std_gen",
        "gray_err",
    )
    curves = {k: torch.zeros(T, B, device=dev) for k in names}  # [frame, sequence]; to the host at the end
    idle_curves = {k: torch.zeros(F, B, device=dev) for k in ("psnr", "gray")}
    idle_mean, idle_std = torch.zeros(F, device=dev), torch.zeros(F, device=dev)
    no_keys = torch.zeros(B, game.num_keys, dtype=torch.bool, device=dev)
    idle_rows = list(range(B, 2 * B))
    prev_real, prev_gen, idle_last = start, start, start
    V = min(cfg.video_sequences, B)
    video = []
    for i in tqdm(range(n), desc="eval", disable=not progress, dynamic_ncols=True):
        if i < T:
            keys = explorer.act(game.blocked)
            real = game.step(keys)
            shuffled = [keys.roll(1, 0)] if cfg.shuffled else []
            out = neural.step(torch.cat([keys, no_keys, *shuffled]))  # [3B,H,W,3]: explorer, idle, shuffled
            if cfg.shuffled:
                curves["shuffled_psnr"][i] = psnr(out[2 * B :], real)
                curves["views_differ"][i] = (game_shuffled.step(shuffled[0]) != real).flatten(1).any(1)
            gen, idle = out[:B], out[B : 2 * B]
            curves["psnr"][i], curves["ssim"][i] = psnr(gen, real), ssim(gen, real)
            curves["base_psnr"][i], curves["base_ssim"][i] = psnr(start, real), ssim(start, real)
            if idm is not None:
                logits_real.append(idm(prev_real, real).cpu())
                logits_gen.append(idm(prev_gen, gen).cpu())
                act_keys.append(effective_keys(keys, neural.key_names).cpu())
                act_valid.append((~game.blocked).cpu())  # a blocked move shows no motion in the real game
            curves["motion_real"][i] = (real.float() - prev_real.float()).abs().flatten(1).mean(1)
            curves["motion_gen"][i] = (gen.float() - prev_gen.float()).abs().flatten(1).mean(1)
            curves["std_real"][i], curves["std_gen"][i] = (
                scores.frame_contrast(real),
                scores.frame_contrast(gen),
            )
            curves["gray_err"][i] = (scores.gray_mean(gen) - scores.gray_mean(real)).abs()
            prev_real, prev_gen = real, gen
            video.append(torch.cat([real[:V], gen[:V]], dim=2).flatten(0, 1).cpu().numpy())  # [V*H, 2W, 3]
        else:
            idle = neural.step(no_keys, slots=idle_rows)
        if not progress and (i + 1) % LOG_EVERY == 0:
            log.info("eval: frame %d of %d (%.0f s)", i + 1, n, time.perf_counter() - t0)
        if i < F:
            f = idle.float()
            idle_mean[i], idle_std[i] = f.mean(), f.std(dim=(1, 2, 3)).mean()
            idle_curves["psnr"][i], idle_curves["gray"][i] = psnr(idle, start), scores.gray_mean(idle)
            idle_last = idle
    curves = {k: v.cpu() for k, v in curves.items()}
    idle_curves = {k: v.cpu() for k, v in idle_curves.items()}
    parts = {"rollouts": time.perf_counter() - t0}

    p, s, bp, bs, margin = scores.horizon_section(curves, cfg.horizons)
    motion = scores.motion_section(curves["motion_real"], curves["motion_gen"], cfg.horizons)
    contrast = scores.contrast_section(
        curves["std_real"], curves["std_gen"], curves["gray_err"], cfg.horizons
    )
    control = (
        scores.controllability_section(
            curves["psnr"], curves["shuffled_psnr"], curves["views_differ"], cfg.horizons, SHUFFLE
        )
        if cfg.shuffled
        else None
    )
    idle = scores.idle_section(
        start, idle_last, idle_curves["psnr"], idle_curves["gray"], idle_mean.cpu(), idle_std.cpu()
    )
    verdict, passed = scores.horizon_verdicts(margin, motion, control)
    ok = {"horizons": passed, "idle": idle["pass"], "motion": motion["pass"],
          "controllability": None if control is None else control["pass"]}  # fmt: skip
    ok["all"] = (
        all(passed.values()) and idle["pass"] and motion["pass"] and ok["controllability"] is not False
    )
    result = {
        "psnr": p,
        "ssim": s,
        "baseline_copy_last": {"psnr": bp, "ssim": bs},
        "margin_over_copy_last": margin,
        "verdict": verdict,
        "pass": ok,
        "motion": motion,
        "contrast": contrast,
        "controllability": control,
        "idle": idle,
        "action_accuracy": None,
        "loop": None,
        "long_run": None,
        "checkpoint": checkpoint,
        "device": str(dev),
        "steps": getattr(neural, "steps", None),
        "sequences": B,
        "context_frames": cfg.context_frames,
        "idle_frames": F,
        "level": "default",
        "seed": cfg.seed,
        "seconds": None,
        "seconds_by_part": None,
    }
    if idm is not None:
        keys_all, valid = torch.cat(act_keys), torch.cat(act_valid)
        result["action_accuracy"] = {
            "real": accuracy(torch.cat(logits_real), keys_all, valid),
            "generated": accuracy(torch.cat(logits_gen), keys_all, valid),
            "frames": T,
            "idm": {k: idm_info.get(k) for k in ("size", "heldout_real", "path")},
        }

    loop = None
    t = time.perf_counter()
    if cfg.loop:
        L = max(1, min(cfg.loop_sequences, B))
        loop = loop_test(neural, new_game, (ctx[:L], ctx_keys[:L]), seeds[:L])
        result["loop"] = {k: v for k, v in loop.items() if k != "frames"}
    parts["loop"], t = time.perf_counter() - t, time.perf_counter()
    long_stats = None
    if cfg.long_frames:  # the first games of the neural world: the real starts again, new explorer paths
        G = min(cfg.long_sequences, cfg.world_batch)
        pick = [g % B for g in range(G)]
        game2 = _at_context(new_game(G), [seeds[g] for g in pick], ctx_keys[pick])
        explorer_long = Explorer(G, game2.num_keys, cfg.seed + 7919, dev)
        result["long_run"], long_stats = long_run(
            neural, game2, explorer_long, (ctx[pick], ctx_keys[pick]), cfg.long_frames, progress
        )
    parts["long_run"], t = time.perf_counter() - t, time.perf_counter()
    if out_dir is not None:
        result["files"] = _write_files(
            Path(out_dir), cfg, checkpoint, curves, idle_curves, start, result, video, loop, long_stats
        )
    parts["files"] = time.perf_counter() - t
    result["seconds_by_part"] = {k: round(v, 1) for k, v in parts.items()}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _write_files(out_dir: Path, cfg, checkpoint, curves, idle_curves, start, result, video, loop, long_stats):
    """The summary plot, the real | generated video, the loop strip and the long-run plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"plot": str(out_dir / "psnr_vs_horizon.png")}
    drift = idle_curves["gray"] - scores.gray_mean(start).cpu()  # [F,B] gray levels vs the true view
    plots.plot_summary(
        curves, idle_curves["psnr"], drift, result, out_dir / "psnr_vs_horizon.png",
        title=f"{checkpoint}: against the real game ({cfg.sequences} sequences)",
    )  # fmt: skip
    files["video"] = str(plots.write_video(video, out_dir / "real_vs_generated.mp4"))
    if loop is not None and "frames" in loop:
        labels = [
            f"{n}: {c}"
            for n in ("turn", "walk")
            for c in ("start", "real mid", "gen mid", "real end", "gen end")
        ]
        plots.save_strip(loop["frames"], labels, out_dir / "loop.png")
        files["loop"] = str(out_dir / "loop.png")
    if long_stats is not None:
        plots.plot_long_run(
            long_stats,
            out_dir / "long_run.png",
            FPS,
            f"{checkpoint}: {cfg.long_frames} frames vs the real game",
        )
        files["long_run"] = str(out_dir / "long_run.png")
    return files
