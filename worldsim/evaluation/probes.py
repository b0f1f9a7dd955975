"""Scripted probes of a neural world against the real game (docs/design.md §11): the loop test and the long run.

Both start the neural world from the same real context frames as the fidelity run and drive the real
game with the same keys, so every figure has the real game's answer beside it.
"""

from __future__ import annotations

import logging

import torch

from worldsim.metrics import psnr, ssim

log = logging.getLogger(__name__)

FPS = 30  # a minute of the long run is 1800 frames


def _keys(names, B: int, device, *pressed: str) -> torch.Tensor:
    k = torch.zeros(B, len(names), dtype=torch.bool, device=device)
    for p in pressed:
        k[:, names.index(p)] = True
    return k


@torch.no_grad()
def loop_test(neural, start_game, context: tuple[torch.Tensor, torch.Tensor], seeds: list[int]) -> dict:
    """Go and come back, then compare with the start view and with the real game doing the same.

    Rows [0, B) turn left 180 degrees and back (the real view returns exactly); rows [B, 2B) walk
    forward and back the same number of frames (a wall on the way can stop the real walk: the real
    game doing the same is the reference). `start_game(batch)` builds a fresh real game;
    `context` = (frames [B,F,H,W,3], keys [B,F,K]) the real context both worlds start from; the
    neural world must hold at least 2B games (the first 2B run the loop).
    Returns the JSON section plus "frames": rows of uint8 frames for the strip image.
    """
    names = list(neural.key_names)
    need = {"turn_left", "turn_right", "forward", "back"}
    if not need <= set(names):
        return {"skipped": f"the key set {names} lacks some of {sorted(need)}"}
    ctx, ctx_keys = context
    B, dev = ctx.shape[0], neural.device
    rows = list(range(2 * B))  # the first 2B games of the neural world
    game = start_game(2 * B)
    game.reset(seeds + seeds)
    for i in range(1, ctx.shape[1]):  # replay the context keys: the game is deterministic
        game.step(ctx_keys[:, i].repeat(2, 1))
    neural.reset_from_frames(ctx.repeat(2, 1, 1, 1, 1).to(dev), ctx_keys.repeat(2, 1, 1).to(dev), slots=rows)
    half = game.config.heading_units // (2 * game.config.turn_units)  # frames for 180 degrees
    go = torch.cat([_keys(names, B, dev, "turn_left"), _keys(names, B, dev, "forward")])
    back = torch.cat([_keys(names, B, dev, "turn_right"), _keys(names, B, dev, "back")])
    start = ctx[:, -1].repeat(2, 1, 1, 1).to(dev)
    for i in range(2 * half):
        k = go if i < half else back
        real, gen = game.step(k), neural.step(k, slots=rows)
        if i == half - 1:
            mid_real, mid_gen = real, gen
    out: dict = {"frames_each_way": half}
    for name, rows in (("turn_180_and_back", slice(0, B)), ("walk_and_back", slice(B, 2 * B))):
        out[name] = {
            "psnr_end_vs_real": round(psnr(gen[rows], real[rows]).mean().item(), 3),
            "ssim_end_vs_real": round(ssim(gen[rows], real[rows]).mean().item(), 4),
            "psnr_end_vs_start": round(psnr(gen[rows], start[rows]).mean().item(), 3),
            "psnr_mid_vs_real": round(psnr(mid_gen[rows], mid_real[rows]).mean().item(), 3),
            "real_psnr_end_vs_start": round(psnr(real[rows], start[rows]).mean().item(), 3),
        }
    out["frames"] = [
        [f[r].cpu().numpy() for f in (start, mid_real, mid_gen, real, gen)] for r in (0, B)
    ]  # the first game of each loop: start | real mid | generated mid | real end | generated end
    return out


@torch.no_grad()
def long_run(neural, game, explorer, context: tuple[torch.Tensor, torch.Tensor], frames: int, progress: bool):
    """`frames` explorer frames on games [0, B) of the neural world and on B real games, side by side.

    Per minute of 30 fps frames: NaN in the model state (the KV cache; checked once a minute), the
    range of frame means and stds, generated and real. "In range": every generated frame's mean lies
    within the real run's range of frame means +- 10 levels, and its std within [0.5, 1.5] x the real
    run's std range (a blank, flat, saturated or noise frame fails). Returns (JSON section, stats).
    """
    from tqdm import tqdm

    ctx, ctx_keys = context
    B, dev = ctx.shape[0], neural.device
    rows = None if neural.batch_size == B else list(range(B))  # all games: no cache gathers
    neural.reset_from_frames(ctx.to(dev), ctx_keys.to(dev), slots=rows)
    stats = {k: torch.zeros(frames, B) for k in ("gen_mean", "gen_std", "real_mean", "real_std")}
    nan_minutes: list[int] = []
    per = FPS * 60
    for i in tqdm(range(frames), desc="long run", disable=not progress, dynamic_ncols=True):
        keys = explorer.act(game.blocked)
        real, gen = game.step(keys), neural.step(keys, slots=rows)
        g, r = gen.float(), real.float()
        stats["gen_mean"][i], stats["gen_std"][i] = g.mean((1, 2, 3)).cpu(), g.flatten(1).std(1).cpu()
        stats["real_mean"][i], stats["real_std"][i] = r.mean((1, 2, 3)).cpu(), r.flatten(1).std(1).cpu()
        minute_end = (i + 1) % per == 0 or i == frames - 1
        # deliberate host sync, once a minute
        if minute_end and not (torch.isfinite(neural.cache.k).all() and torch.isfinite(neural.cache.v).all()):
            nan_minutes.append(i // per)
        if minute_end and not progress:  # a run in the background: one line a minute of frames
            log.info("long run: minute %d of %d", i // per + 1, -(-frames // per))
    lo_m, hi_m = stats["real_mean"].min().item() - 10, stats["real_mean"].max().item() + 10
    lo_s, hi_s = 0.5 * stats["real_std"].min().item(), 1.5 * stats["real_std"].max().item()
    minutes = []
    for m in range(0, frames, per):
        s = {k: v[m : m + per] for k, v in stats.items()}
        ok_mean = bool(((s["gen_mean"] >= lo_m) & (s["gen_mean"] <= hi_m)).all())
        ok_std = bool(((s["gen_std"] >= lo_s) & (s["gen_std"] <= hi_s)).all())
        minutes.append({
            "minute": m // per,
            "frames": int(s["gen_mean"].shape[0]),
            "gen_mean": [round(s["gen_mean"].min().item(), 2), round(s["gen_mean"].max().item(), 2)],
            "gen_std": [round(s["gen_std"].min().item(), 2), round(s["gen_std"].max().item(), 2)],
            "real_mean": [round(s["real_mean"].min().item(), 2), round(s["real_mean"].max().item(), 2)],
            "real_std": [round(s["real_std"].min().item(), 2), round(s["real_std"].max().item(), 2)],
            "nan": m // per in nan_minutes,
            "in_range": ok_mean and ok_std,
        })  # fmt: skip
    result = {
        "frames": frames,
        "fps": FPS,
        "nan": bool(nan_minutes),
        "in_range": all(m["in_range"] for m in minutes),
        "minutes_in_range": sum(m["in_range"] for m in minutes),
        "allowed_mean": [round(lo_m, 2), round(hi_m, 2)],
        "allowed_std": [round(lo_s, 2), round(hi_s, 2)],
        "per_minute": minutes,
    }
    return result, stats
