"""Verdicts of an evaluation: per-frame curves in, the JSON sections and their pass/fail lines out.

The runner (runner.py) collects the curves; this module says what they mean, against targets chosen so
that no cheap trick passes: a model must beat repeating the last real frame, hold a still view still,
move as much as the real game, and answer to its keys. The keys each function writes are documented
in runner.py's module docstring. A NaN in a `[T,B]` curve marks a frame a sequence does not have (a
recorded clip's episode reset before that horizon, dataset_runner.py): every mean skips it.
"""

from __future__ import annotations

import torch

from worldsim.metrics import psnr

MARGIN_DB = 1.0  # a horizon passes when the model beats copy-last by at least this much
IDLE_PSNR_DB = 30.0  # the last idle frame against the true (unchanged) view
IDLE_DRIFT_LEVELS = 3.0  # |brightness drift| of the idle view, in gray levels 0-255
MOTION_BAND = (0.8, 1.2)  # generated / real mean absolute frame difference
TAIL_FRAMES = 30  # the idle drift is measured over the last second of 30 fps frames
IDLE_MARKS = (1, 30, 90, 180, 300, 600, 1000, 2000)  # idle frames whose PSNR the JSON lists
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601: the gray level a person sees


def gray_mean(frames: torch.Tensor) -> torch.Tensor:
    """The mean gray level (0-255) of each uint8 frame `[B,H,W,3]` -> `[B]`."""
    w = torch.tensor(_LUMA, device=frames.device)
    return (frames.float() * w).sum(-1).flatten(1).mean(1)


def _r(x: float | torch.Tensor, nd: int = 3) -> float:
    return round(float(x), nd)


def horizon_section(
    curves: dict[str, torch.Tensor], horizons: tuple[int, ...]
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
    """PSNR, SSIM, copy-last PSNR and SSIM at each horizon (means over sequences of `[T,B]` curves),
    and the margin over copy-last: the model's PSNR minus copy-last's, from the rounded figures so that
    the table adds up."""

    def at(name: str) -> dict[str, float]:
        return {str(h): _r(curves[name][h - 1].nanmean()) for h in horizons}

    p, s, bp, bs = at("psnr"), at("ssim"), at("base_psnr"), at("base_ssim")
    margin = {h: _r(p[h] - bp[h]) for h in p}
    return p, s, bp, bs, margin


def _windows(horizons: tuple[int, ...], first: int = 2) -> list[tuple[str, slice]]:
    """Frames (previous horizon, horizon] of each horizon, from frame `first` on, as slices of a `[T, ...]`
    curve (frame f at index f - 1)."""
    out, lo = [], first - 1
    for h in sorted(horizons):
        out.append((str(h), slice(lo, max(lo, h))))
        lo = max(lo, h)
    return out


def _ratio(gen: torch.Tensor, real: torch.Tensor) -> float | None:
    r = real.nanmean().item() if real.numel() else 0.0
    return None if r == 0 or r != r else _r(gen.nanmean().item() / r)  # r != r: no frame (all NaN)


def motion_section(real: torch.Tensor, gen: torch.Tensor, horizons: tuple[int, ...]) -> dict:
    """Mean absolute frame difference (levels 0-255 over RGB) of generated vs real frames on the same keys.

    `real`, `gen`: `[T,B]` each frame's difference to the previous frame of the same world. Frame 1 is
    left out: the first generated frame's step from the real context frame holds the model's
    reconstruction error, not motion. The ratio (generated / real, a ratio of means) overall and per
    window of frames between horizons: below the band the world is sluggish or frozen (a world that
    repeats its frame scores 0), above it flickers. None where the real game did not move (or no frame).
    """
    by_h = {h: _ratio(gen[w], real[w]) for h, w in _windows(horizons)}
    ratio = _ratio(gen[1:], real[1:])
    lo, hi = MOTION_BAND
    ok = ratio is not None and lo <= ratio <= hi
    if ratio is None:
        line = "FAIL: the real game did not move on these keys; no motion ratio"
    else:
        how = "in" if ok else ("below" if ratio < lo else "above")
        verdict = "pass" if ok else "FAIL"
        line = f"{verdict}: generated frames move {ratio}x as much as real ones ({how} {lo}-{hi})"
    return {
        "real_mean_abs_diff": _r(real[1:].nanmean()) if real.shape[0] > 1 else None,
        "generated_mean_abs_diff": _r(gen[1:].nanmean()) if gen.shape[0] > 1 else None,
        "ratio": ratio,
        "ratio_by_horizon": {h: by_h[h] for h in sorted(by_h, key=int)},
        "band": list(MOTION_BAND),
        "pass": ok,
        "verdict": line,
    }


def frame_contrast(frames: torch.Tensor) -> torch.Tensor:
    """Each uint8 frame's contrast `[B,H,W,3]` -> `[B]`: the std of its pixels (levels 0-255, over RGB)."""
    return frames.float().flatten(1).std(1)


def contrast_section(
    real_std: torch.Tensor, gen_std: torch.Tensor, gray_err: torch.Tensor, horizons: tuple[int, ...]
) -> dict:
    """How washed out and how far off in brightness the generated frames are, frame by frame.

    `real_std`, `gen_std`: `[T,B]` each frame's contrast (`frame_contrast`); `gray_err`: `[T,B]`
    |mean gray level of the generated frame - the real frame's|. A blurred or washed-out view scores
    well in PSNR against a view it cannot place, and moves little; its contrast says so. Per window of
    frames up to each horizon (frame 1 included: contrast needs no previous frame): the ratio of means,
    generated / real, and the mean brightness error. Informational: no pass or fail of its own.
    """
    out = {"ratio_by_horizon": {}, "brightness_error_by_horizon": {}}
    for h, w in _windows(horizons, first=1):
        out["ratio_by_horizon"][h] = _ratio(gen_std[w], real_std[w])
        out["brightness_error_by_horizon"][h] = _r(gray_err[w].nanmean(), 2)
    ratio = _ratio(gen_std, real_std)
    out.update(real_std=_r(real_std.nanmean(), 2), generated_std=_r(gen_std.nanmean(), 2), ratio=ratio,
               brightness_error=_r(gray_err.nanmean(), 2))  # fmt: skip
    out["verdict"] = (
        "no contrast in the real frames"
        if ratio is None
        else f"generated frames have {ratio}x the real frames' contrast (pixel std {out['generated_std']} "
        f"against {out['real_std']}), their brightness {out['brightness_error']} gray levels off the real "
        f"frame's on average"
    )
    return out


def controllability_section(
    true_psnr: torch.Tensor, shuffled: torch.Tensor, differ: torch.Tensor, horizons, how: str
) -> dict:
    """PSNR with the true keys minus PSNR with shuffled keys, per horizon: > 0 means the keys matter.

    `true_psnr`, `shuffled`: `[T,B]` PSNR curves against the real frames of the true keys; `differ`:
    `[T,B]` whether the real game's view on the shuffled keys differs from its view on the true ones.
    Each horizon averages over those sequences only (where the real views agree, e.g. both walks
    blocked by a wall, no world could tell the keys apart); None where there are none.
    """
    tp, sp, margin, rows = {}, {}, {}, {}
    for h in horizons:
        m = differ[h - 1] > 0
        k, rows[str(h)] = str(h), int(m.sum())
        tp[k] = _r(true_psnr[h - 1][m].mean()) if m.any() else None
        sp[k] = _r(shuffled[h - 1][m].mean()) if m.any() else None
        margin[k] = None if tp[k] is None else _r(tp[k] - sp[k])
    known = {h: v for h, v in margin.items() if v is not None}
    ok = bool(known) and all(v > 0 for v in known.values())
    if not known:
        line = "FAIL: the shuffled keys never led the real game to another view"
    else:
        worst = min(known, key=known.get)
        line = (
            f"pass: the true keys beat shuffled ones wherever these lead elsewhere "
            f"(least {known[worst]:+.3f} dB at {worst})"
            if ok
            else f"FAIL: shuffled keys do as well as the true ones at {worst} frames ({known[worst]:+.3f} dB)"
        )
    return {"psnr_true_keys": tp, "psnr_shuffled_keys": sp, "margin_db": margin, "sequences": rows,
            "shuffle": how, "pass": ok, "verdict": line}  # fmt: skip


def horizon_verdicts(
    margin: dict[str, float], motion: dict, control: dict | None
) -> tuple[dict[str, str], dict[str, bool]]:
    """One line per horizon: above copy-last by >= MARGIN_DB, moving within the band over the frames
    leading to it, answering to the keys (controllability > 0) at it; the line names what fails."""
    lines, passed = {}, {}
    lo, hi = MOTION_BAND
    for h, m in margin.items():
        fails, notes = [], [f"{m:+.3f} dB vs copy-last"]
        if m < MARGIN_DB:
            fails.append("below copy-last" if m < 0 else f"less than {MARGIN_DB:+.1f} dB over copy-last")
        r = motion["ratio_by_horizon"].get(h)
        if r is not None:
            notes.append(f"motion {r}x")
            if not lo <= r <= hi:
                fails.append(f"motion {r}x outside {lo}-{hi}")
        c = None if control is None else control["margin_db"][h]
        if c is not None:
            notes.append(f"keys {c:+.3f} dB")
            if c <= 0:
                fails.append("shuffled keys do as well")
        passed[h] = not fails
        lines[h] = ("pass: " if not fails else "FAIL (" + "; ".join(fails) + "): ") + ", ".join(notes)
    return lines, passed


def idle_section(
    start: torch.Tensor,
    last: torch.Tensor,
    psnr_curve: torch.Tensor,
    gray: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
) -> dict:
    """The no-keys run, scored against the true view: the real game does not move without keys, so the
    last real frame (`start`, `[B,H,W,3]`) is the truth for every idle frame.

    `last`: the last idle frame `[B,H,W,3]`; `psnr_curve`, `gray`: `[F,B]` PSNR to the true view and
    mean gray level of every idle frame; `means`, `stds`: `[F]` pixel statistics of the old check.
    Passes when the last frame is >= IDLE_PSNR_DB from the true view and the mean gray level of the last
    TAIL_FRAMES frames is within IDLE_DRIFT_LEVELS of the true view's (on average over sequences).
    """
    n = psnr_curve.shape[0]
    p_last = psnr(last, start)  # [B]
    drift = gray[-min(TAIL_FRAMES, n) :].mean(0) - gray_mean(start).cpu()  # [B] gray levels
    ok_psnr = p_last.mean().item() >= IDLE_PSNR_DB
    ok_drift = drift.abs().mean().item() <= IDLE_DRIFT_LEVELS
    marks = sorted({m for m in IDLE_MARKS if m <= n} | {n})
    fails = [f"last frame {_r(p_last.mean())} dB < {IDLE_PSNR_DB}"] if not ok_psnr else []
    if not ok_drift:
        fails.append(f"mean |brightness drift| {_r(drift.abs().mean(), 2)} > {IDLE_DRIFT_LEVELS} gray levels")
    spread = (  # sequences that drift opposite ways cancel in the mean: then the mean of |drift| too
        f", mean |drift| {_r(drift.abs().mean(), 2)}"
        if abs(drift.mean().item()) < drift.abs().mean().item() - 0.05
        else ""
    )
    summary = (
        f"last frame {_r(p_last.mean())} dB from the true view (>= {IDLE_PSNR_DB}), brightness drift "
        f"{_r(drift.mean(), 2):+} gray levels{spread} (|.| <= {IDLE_DRIFT_LEVELS})"
    )
    # The old statistics-only check, kept for the cards that print it: it cannot tell a still view
    # from one that dissolves into stripes of the same brightness and contrast.
    real_mean = start.float().mean(dim=(1, 2, 3))
    real_std = start.float().std(dim=(1, 2, 3)).mean().item()
    mean_lo, mean_hi = real_mean.min().item(), real_mean.max().item()
    return {
        "frames": n,
        "psnr_last": _r(p_last.mean()),
        "psnr_last_min": _r(p_last.min()),
        "drift": _r(drift.mean(), 2),
        "drift_abs": _r(drift.abs().mean(), 2),
        "drift_frames": min(TAIL_FRAMES, n),
        "psnr_curve": {str(m): _r(psnr_curve[m - 1].mean()) for m in marks},
        "pass": ok_psnr and ok_drift,
        "verdict": ("pass: " if not fails else "FAIL (" + "; ".join(fails) + "): ") + summary,
        "psnr_last_vs_start": _r(p_last.mean()),
        "mean_first": _r(means[0], 2),
        "mean_last": _r(means[-1], 2),
        "std_first": _r(stds[0], 2),
        "std_last": _r(stds[-1], 2),
        "real_mean_range": [_r(mean_lo, 2), _r(mean_hi, 2)],
        "real_std": _r(real_std, 2),
        "in_range": bool(((means >= mean_lo - 40) & (means <= mean_hi + 40)).all()),
        "collapsed": bool(stds.min() < 0.3 * real_std),
    }
