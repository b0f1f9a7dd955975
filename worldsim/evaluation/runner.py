"""NeuralWorld vs GameWorld on the same seeded explorer keys, from the same real start frames (docs/design.md §11).

Writes a JSON of PSNR/SSIM at fixed horizons (with a copy-last-frame baseline so the numbers mean
something), an idle run (no keys: no collapse), action following (an inverse-dynamics model trained on
the real game reads the keys back from real and from generated frame pairs), a loop test and a long run
(probes.py); plots: PSNR vs horizon, loop strip, long-run statistics; a real | generated mp4.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from worldsim.data import Explorer
from worldsim.evaluation import plots
from worldsim.evaluation.idm import accuracy, effective_keys, get_idm
from worldsim.evaluation.probes import FPS, long_run, loop_test
from worldsim.game import GameWorld
from worldsim.metrics import psnr, ssim

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    sequences: int = 8  # B: explorer key sequences run side by side
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

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.context_frames < 1:
            raise ValueError("EvalConfig.sequences and context_frames must be >= 1")
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"EvalConfig.horizons must be positive frame counts, got {self.horizons}")
        if self.idle_frames < 1:
            raise ValueError(f"EvalConfig.idle_frames must be >= 1, got {self.idle_frames}")
        if self.loop_sequences < 1:
            raise ValueError(f"EvalConfig.loop_sequences must be >= 1, got {self.loop_sequences}")
        if self.long_frames < 0:
            raise ValueError(f"EvalConfig.long_frames must be >= 0 (0 = no long run), got {self.long_frames}")
        if self.idm_steps < 1:
            raise ValueError(f"EvalConfig.idm_steps must be >= 1, got {self.idm_steps}")

    @classmethod
    def quick(cls, seed: int = 0) -> EvalConfig:
        return cls(
            sequences=4, horizons=(1, 8, 32, 128), context_frames=4, idle_frames=128, seed=seed,
            long_frames=0, loop_sequences=2,
        )  # fmt: skip


def _start(game, neural, explorer, cfg: EvalConfig, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reset the game, walk `context_frames` real frames with explorer keys, start the neural world on them.

    The neural world holds 2B games: rows [0, B) follow the explorer, rows [B, 2B) idle; both halves
    start from the same real context, so one batched step serves both runs.
    """
    frames = [game.reset(seeds)]
    keys = [torch.zeros(len(seeds), game.num_keys, dtype=torch.bool, device=game.device)]
    for _ in range(cfg.context_frames - 1):
        k = explorer.act(game.blocked)
        keys.append(k)
        frames.append(game.step(k))
    ctx = torch.stack(frames, 1)  # [B,F,H,W,3]
    ctx_keys = torch.stack(keys, 1)  # [B,F,K]
    neural.reset_from_frames(
        ctx.repeat(2, 1, 1, 1, 1).to(neural.device), ctx_keys.repeat(2, 1, 1).to(neural.device)
    )
    return ctx, ctx_keys


@torch.no_grad()
def evaluate(
    neural,
    cfg: EvalConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> dict:
    """Fidelity and idle evaluation of `neural` (a NeuralWorld of 2 x cfg.sequences games) on the default level."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    B, dev = cfg.sequences, neural.device
    if neural.batch_size != 2 * B:
        raise ValueError(
            f"the neural world steps {neural.batch_size} games; evaluate needs 2 x sequences = {2 * B} "
            f"(explorer rows + idle rows)"
        )
    game = GameWorld(batch_size=B, size=(neural.height, neural.width), level="default", device=dev)
    seeds = [cfg.seed + i for i in range(B)]
    explorer = Explorer(B, game.num_keys, cfg.seed, dev)
    ctx, ctx_keys = _start(game, neural, explorer, cfg, seeds)
    start = ctx[:, -1]
    idm = None
    if cfg.action:
        idm, idm_info = get_idm(
            (neural.height, neural.width), neural.key_names, path=cfg.idm_path, device=dev,
            steps=cfg.idm_steps, progress=progress,
        )  # fmt: skip
        logits_real, logits_gen, act_keys, act_valid = [], [], [], []

    T, n = max(cfg.horizons), max(max(cfg.horizons), cfg.idle_frames)
    curves = {k: torch.zeros(T, B) for k in ("psnr", "ssim", "base_psnr", "base_ssim")}
    motion_real, motion_gen = torch.zeros(T), torch.zeros(T)
    idle_mean, idle_std = torch.zeros(cfg.idle_frames), torch.zeros(cfg.idle_frames)
    no_keys = torch.zeros(B, game.num_keys, dtype=torch.bool, device=dev)
    idle_rows = list(range(B, 2 * B))
    prev_real, prev_gen, idle_last = start, start, start
    V = min(cfg.video_sequences, B)
    video = []
    for i in tqdm(range(n), desc="eval", disable=not progress, dynamic_ncols=True):
        if i < T:
            keys = explorer.act(game.blocked)
            real = game.step(keys)
            out = neural.step(torch.cat([keys, no_keys]))  # [2B,H,W,3]: explorer rows, then idle rows
            gen, idle = out[:B], out[B:]
            curves["psnr"][i] = psnr(gen, real).cpu()
            curves["ssim"][i] = ssim(gen, real).cpu()
            curves["base_psnr"][i] = psnr(start, real).cpu()
            curves["base_ssim"][i] = ssim(start, real).cpu()
            if idm is not None:
                logits_real.append(idm(prev_real, real).cpu())
                logits_gen.append(idm(prev_gen, gen).cpu())
                act_keys.append(effective_keys(keys, neural.key_names).cpu())
                act_valid.append((~game.blocked).cpu())  # a blocked move shows no motion in the real game
            motion_real[i] = (real.float() - prev_real.float()).abs().mean().cpu()
            motion_gen[i] = (gen.float() - prev_gen.float()).abs().mean().cpu()
            prev_real, prev_gen = real, gen
            video.append(torch.cat([real[:V], gen[:V]], dim=2).flatten(0, 1).cpu().numpy())  # [V*H, 2W, 3]
        else:
            idle = neural.step(no_keys, slots=idle_rows)
        if i < cfg.idle_frames:
            f = idle.float()
            idle_mean[i] = f.mean().cpu()
            idle_std[i] = f.std(dim=(1, 2, 3)).mean().cpu()
            idle_last = idle

    def at(name: str) -> dict[str, float]:
        return {str(h): round(curves[name][h - 1].mean().item(), 3) for h in cfg.horizons}

    result = {
        "psnr": at("psnr"),
        "ssim": at("ssim"),
        "baseline_copy_last": {"psnr": at("base_psnr"), "ssim": at("base_ssim")},
        "motion": {
            "real_mean_abs_diff": round(motion_real.mean().item(), 3),
            "generated_mean_abs_diff": round(motion_gen.mean().item(), 3),
        },
        "idle": _idle_summary(start, idle_last, idle_mean, idle_std),
        "action_accuracy": None,
        "loop": None,
        "long_run": None,
        "checkpoint": checkpoint,
        "device": str(dev),
        "steps": getattr(neural, "steps", None),
        "sequences": B,
        "context_frames": cfg.context_frames,
        "level": "default",
        "seed": cfg.seed,
        "seconds": None,
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
    if cfg.loop:

        def new_game(batch: int) -> GameWorld:
            return GameWorld(
                batch_size=batch, size=(neural.height, neural.width), level="default", device=dev
            )

        L = max(1, min(cfg.loop_sequences, B))
        loop = loop_test(neural, new_game, (ctx[:L], ctx_keys[:L]), seeds[:L])
        result["loop"] = {k: v for k, v in loop.items() if k != "frames"}
    long_stats = None
    if cfg.long_frames:  # all 2B games of the neural world: the same real start, 2B explorer paths
        game2 = GameWorld(batch_size=2 * B, size=(neural.height, neural.width), level="default", device=dev)
        game2.reset(seeds + seeds)
        for i in range(1, cfg.context_frames):  # the same real context again (deterministic game)
            game2.step(ctx_keys[:, i].repeat(2, 1))
        explorer_long = Explorer(2 * B, game2.num_keys, cfg.seed + 7919, dev)
        context2 = (ctx.repeat(2, 1, 1, 1, 1), ctx_keys.repeat(2, 1, 1))
        result["long_run"], long_stats = long_run(
            neural, game2, explorer_long, context2, cfg.long_frames, progress
        )
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {"plot": str(out_dir / "psnr_vs_horizon.png")}
        plots.plot_horizons(
            curves, out_dir / "psnr_vs_horizon.png", title=f"{checkpoint}: fidelity vs the real game"
        )
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
        result["files"] = files
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _idle_summary(start: torch.Tensor, last: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> dict:
    # The real game does not move without keys: the start frame is the truth for every idle frame.
    real_mean = start.float().mean(dim=(1, 2, 3))
    real_std = start.float().std(dim=(1, 2, 3)).mean().item()
    mean_lo, mean_hi = real_mean.min().item(), real_mean.max().item()
    # "In range": the mean brightness stays within 40 levels of the real start frames' and the
    # contrast never collapses below 30% of theirs (a blank or flat frame fails).
    in_range = bool(((means >= mean_lo - 40) & (means <= mean_hi + 40)).all())
    collapsed = bool(stds.min() < 0.3 * real_std)
    return {
        "frames": len(means),
        "mean_first": round(means[0].item(), 2),
        "mean_last": round(means[-1].item(), 2),
        "std_first": round(stds[0].item(), 2),
        "std_last": round(stds[-1].item(), 2),
        "real_mean_range": [round(mean_lo, 2), round(mean_hi, 2)],
        "real_std": round(real_std, 2),
        "psnr_last_vs_start": round(psnr(last, start).mean().item(), 3),
        "in_range": in_range,
        "collapsed": collapsed,
    }
