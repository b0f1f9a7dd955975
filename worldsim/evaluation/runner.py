"""NeuralWorld vs GameWorld on the same seeded explorer keys, from the same real start frames (DESIGN §10).

Writes a JSON of PSNR/SSIM at fixed horizons (with a copy-last-frame baseline so the numbers mean
something), an idle run (no keys: no collapse), a PSNR-vs-horizon plot and a real | generated mp4.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldsim.evaluation.metrics import psnr, ssim

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    sequences: int = 8  # B: explorer key sequences run side by side
    horizons: tuple[int, ...] = (1, 8, 32, 128, 512)
    context_frames: int = 4  # real frames the neural world starts from
    idle_frames: int = 2000
    seed: int = 0
    video_sequences: int = 2  # rows of the real | generated video

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.context_frames < 1:
            raise ValueError("EvalConfig.sequences and context_frames must be >= 1")
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"EvalConfig.horizons must be positive frame counts, got {self.horizons}")
        if self.idle_frames < 1:
            raise ValueError(f"EvalConfig.idle_frames must be >= 1, got {self.idle_frames}")

    @classmethod
    def quick(cls, seed: int = 0) -> EvalConfig:
        return cls(sequences=4, horizons=(1, 8, 32, 128), context_frames=4, idle_frames=128, seed=seed)


def _start(game, neural, explorer, cfg: EvalConfig, seeds: list[int]) -> torch.Tensor:
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
    return ctx[:, -1]


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

    from worldsim.data import Explorer
    from worldsim.game import GameWorld

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
    start = _start(game, neural, explorer, cfg, seeds)

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
        "checkpoint": checkpoint,
        "device": str(dev),
        "steps": getattr(neural, "steps", None),
        "sequences": B,
        "context_frames": cfg.context_frames,
        "level": "default",
        "seed": cfg.seed,
        "seconds": None,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_horizons(
            curves, out_dir / "psnr_vs_horizon.png", title=f"{checkpoint}: fidelity vs the real game"
        )
        video_path = write_video(video, out_dir / "real_vs_generated.mp4")
        result["files"] = {
            "plot": str(out_dir / "psnr_vs_horizon.png"),
            "video": str(video_path),
        }
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


def plot_horizons(curves: dict[str, torch.Tensor], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = curves["psnr"].shape[0]
    x = np.arange(1, T + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, metric in zip(axes, ("psnr", "ssim")):
        ax.plot(x, curves[metric].mean(1).numpy(), label="neural world")
        ax.plot(x, curves[f"base_{metric}"].mean(1).numpy(), label="copy last real frame", linestyle="--")
        ax.set_xscale("log")
        ax.set_xlabel("frames after the real context")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_video(frames: list[np.ndarray], path: Path, fps: int = 15, scale: int = 4) -> Path:
    """uint8 [H,W,3] frames -> an H.264 mp4 (nearest-upscaled so 64x64 frames are visible).

    Where imageio-ffmpeg is not installed (the GPU image lacks it), writes a GIF beside it instead and
    returns that path.
    """
    big = [np.ascontiguousarray(f.repeat(scale, 0).repeat(scale, 1)) for f in frames]
    try:
        import imageio_ffmpeg
    except ImportError:
        from PIL import Image

        path = path.with_suffix(".gif")
        log.warning("imageio-ffmpeg is not installed: writing %s instead of an mp4", path)
        tmp = path.with_name(path.stem + ".tmp" + path.suffix)
        images = [Image.fromarray(f) for f in big]
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        os.replace(tmp, path)
        return path
    h, w = big[0].shape[:2]
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1, quality=8
    )
    writer.send(None)
    for f in big:
        writer.send(f)
    writer.close()
    os.replace(tmp, path)
    return path
