"""Plots and videos of an evaluation: PSNR vs horizon, a comparison of several runs, long-run statistics,
the loop strip, and the real | generated video (atomic writes, Agg backend, no display needed)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fidelity_panels(ax_p, ax_m, curves: dict[str, torch.Tensor], result: dict) -> None:
    """PSNR vs frames beside copy-last (and shuffled keys), and the margin over copy-last against its
    target; means over sequences skip NaN (frames a recorded clip does not have)."""
    from worldsim.evaluation.scores import MARGIN_DB

    x = np.arange(1, curves["psnr"].shape[0] + 1)
    hs = [int(h) for h in result["psnr"]]
    ax_p.plot(x, curves["psnr"].nanmean(1).numpy(), label="neural world")
    ax_p.plot(x, curves["base_psnr"].nanmean(1).numpy(), "--", color="gray", label="copy last real frame")
    if result.get("controllability"):
        ax_p.plot(x, curves["shuffled_psnr"].nanmean(1).numpy(), ":", color="tab:red", label="shuffled keys")
    ax_p.plot(hs, [result["psnr"][str(h)] for h in hs], "o", color="tab:blue")
    ax_p.set_ylabel("PSNR to the real frame (dB)")
    ax_p.set_title("fidelity on the same keys")

    margin = (curves["psnr"] - curves["base_psnr"]).nanmean(1).numpy()
    ax_m.plot(x, margin, color="tab:blue")
    ax_m.fill_between(x, margin, MARGIN_DB, where=margin < MARGIN_DB, color="tab:red", alpha=0.25)
    ax_m.axhline(0, color="black", linewidth=0.8)
    ax_m.axhline(MARGIN_DB, color="tab:green", linestyle="--", label=f"target +{MARGIN_DB:g} dB")
    for h in hs:
        m = result["margin_over_copy_last"][str(h)]
        ax_m.plot([h], [m], "o", color="tab:green" if m >= MARGIN_DB else "tab:red")
        ax_m.annotate(f"{m:+.1f}", (h, m), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax_m.set_ylabel("margin over copy-last (dB)")
    ax_m.set_title("neural world minus copy-last (red: short of the target)")
    for ax in (ax_p, ax_m):
        ax.set_xscale("log")
        ax.set_xlabel("frames after the real context")


def _motion_panel(ax_v, curves: dict[str, torch.Tensor], result: dict) -> None:
    x = np.arange(1, curves["psnr"].shape[0] + 1)
    mo = result["motion"]
    ax_v.plot(
        x[1:], curves["motion_real"][1:].nanmean(1).numpy(), color="black", linewidth=0.8, label="real frames"
    )
    ax_v.plot(
        x[1:],
        curves["motion_gen"][1:].nanmean(1).numpy(),
        color="tab:blue",
        linewidth=0.8,
        label="neural world",
    )
    title = f"motion: ratio {mo['ratio']} (band {mo['band'][0]}-{mo['band'][1]})"
    ylabel = "motion: mean |frame - previous| (levels)"
    if "std_real" in curves and result.get("contrast"):  # same units: gray levels 0-255
        for name, color, who in (("std_real", "black", "real"), ("std_gen", "tab:blue", "neural")):
            ax_v.plot(x, curves[name].nanmean(1).numpy(), color=color, linewidth=0.8, linestyle="--",
                      label=f"contrast (pixel std), {who}")  # fmt: skip
        title += f"; contrast ratio {result['contrast']['ratio']}"
        ylabel = "levels 0-255: motion (solid), contrast (dashed)"
    ax_v.set_xlabel("frames after the real context")
    ax_v.set_ylabel(ylabel)
    ax_v.set_title(title)


def _finish(fig, axes, legends, title: str, path: Path) -> None:
    for ax in legends:
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_summary(
    curves: dict[str, torch.Tensor],
    idle_psnr: torch.Tensor,
    idle_drift: torch.Tensor,
    result: dict,
    path: Path,
    title: str,
) -> None:
    """One figure a person can judge a world by: PSNR vs frames beside copy-last (and shuffled keys), the
    margin over copy-last against its +1 dB target, the idle PSNR to the true view (and brightness
    drift), and motion; `curves` `[T,B]` and idle `[F,B]` as the runner collects them."""
    from worldsim.evaluation.scores import IDLE_DRIFT_LEVELS, IDLE_PSNR_DB

    plt = _plt()
    fig, ((ax_p, ax_m), (ax_i, ax_v)) = plt.subplots(2, 2, figsize=(11, 8), dpi=100)
    _fidelity_panels(ax_p, ax_m, curves, result)

    idle = result["idle"]
    fi = np.arange(1, idle_psnr.shape[0] + 1)
    ax_i.plot(fi, idle_psnr.mean(1).numpy(), color="tab:blue", label="PSNR to the true view")
    ax_i.axhline(IDLE_PSNR_DB, color="tab:green", linestyle="--", label=f"target {IDLE_PSNR_DB:g} dB")
    ax_i.set_xlabel("idle frames (no keys)")
    ax_i.set_ylabel("PSNR (dB)")
    ax_i.set_title(f"standing still: {'pass' if idle['pass'] else 'FAIL'}")
    ax_d = ax_i.twinx()
    ax_d.plot(fi, idle_drift.mean(1).numpy(), color="tab:orange", linewidth=0.8, label="brightness drift")
    ax_d.axhspan(-IDLE_DRIFT_LEVELS, IDLE_DRIFT_LEVELS, color="tab:orange", alpha=0.1)
    ax_d.set_ylabel("brightness drift (gray levels)")
    lines = ax_i.get_legend_handles_labels()
    more = ax_d.get_legend_handles_labels()
    ax_i.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)

    _motion_panel(ax_v, curves, result)
    _finish(fig, (ax_p, ax_m, ax_i, ax_v), (ax_p, ax_m, ax_v), title, path)


def plot_fidelity(curves: dict[str, torch.Tensor], result: dict, path: Path, title: str) -> None:
    """The summary figure without the idle run (recorded episodes have no true still view): PSNR vs
    frames beside copy-last, the margin over copy-last, motion; `curves` `[T,B]`, NaN where a clip
    has no frame."""
    plt = _plt()
    fig, (ax_p, ax_m, ax_v) = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    _fidelity_panels(ax_p, ax_m, curves, result)
    _motion_panel(ax_v, curves, result)
    _finish(fig, (ax_p, ax_m, ax_v), (ax_p, ax_m, ax_v), title, path)


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


def plot_compare(results: dict[str, dict], path: Path, title: str = "fidelity vs the real game") -> None:
    """PSNR and SSIM vs horizon of several eval JSONs (e.g. student vs baseline vs teacher), one line each."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, metric in zip(axes, ("psnr", "ssim")):
        for i, (name, r) in enumerate(results.items()):
            hs = [int(h) for h in r[metric]]
            ax.plot(hs, [r[metric][str(h)] for h in hs], marker="o", label=name)
            if i == 0 and "baseline_copy_last" in r:
                base = r["baseline_copy_last"][metric]
                ax.plot(
                    hs, [base[str(h)] for h in hs], linestyle="--", color="gray", label="copy last real frame"
                )
        ax.set_xscale("log")
        ax.set_xlabel("frames after the real context")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_long_run(stats: dict[str, torch.Tensor], path: Path, fps: int, title: str) -> None:
    """Frame mean and std over a long run, generated vs real (per-frame values averaged over games)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    n = stats["gen_mean"].shape[0]
    minutes = np.arange(n) / (fps * 60)
    for ax, what in zip(axes, ("mean", "std")):
        for who, style in (("real", "-"), ("gen", "-")):
            y = stats[f"{who}_{what}"].mean(1).numpy()
            ax.plot(minutes, y, style, linewidth=0.6, label="real game" if who == "real" else "neural world")
        ax.set_xlabel("minutes (30 fps frames)")
        ax.set_ylabel(f"frame {what} (uint8 levels)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def save_strip(rows: list[list[np.ndarray]], labels: list[str], path: Path, scale: int = 3) -> None:
    """A grid image of uint8 `[H,W,3]` frames, one labelled row per list (e.g. the loop test)."""
    plt = _plt()
    R, C = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(R, C, figsize=(C * 1.1 * scale / 2, R * 1.2 * scale / 2), dpi=100, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(C):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
                ax.set_title(labels[i * C + j] if i * C + j < len(labels) else "", fontsize=7)
    fig.tight_layout()
    _save(fig, path)
