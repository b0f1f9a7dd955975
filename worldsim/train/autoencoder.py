"""Train the frame autoencoder on game frames rendered on the fly, or on a dataset's frames with --data
(docs/design.md §7.1)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from worldsim.data.loader import make_loader
from worldsim.errors import UserError
from worldsim.metrics import psnr
from worldsim.model.autoencoder import AE_PRESETS, Autoencoder, AutoencoderConfig, frames_to_model
from worldsim.model.config import PRESETS
from worldsim.train import common, datasets, distributed, resume
from worldsim.train.options import add_autoencoder_arguments as add_arguments  # noqa: F401 (stage protocol)

log = logging.getLogger(__name__)

STATE_FILE = "autoencoder.pt"


def autoencoder_config(preset: str) -> AutoencoderConfig:
    """The autoencoder config nested in the model preset (worldsim.model.config), else AE_PRESETS."""
    if preset in PRESETS:
        return copy.deepcopy(PRESETS[preset].autoencoder)
    if preset not in AE_PRESETS:
        raise UserError(
            f"--preset {preset!r} is unknown; pick one of {sorted(set(AE_PRESETS) | set(PRESETS))}"
        )
    return copy.deepcopy(AE_PRESETS[preset])


def load_autoencoder(
    path: str | Path, device: torch.device | str = "cpu", flag: str = "--autoencoder"
) -> Autoencoder:
    """An Autoencoder (eval mode) from a train state written by `worldsim train autoencoder`."""
    state = common.load_state(path, flag=flag)
    if state.get("kind") != "autoencoder":
        raise UserError(f"{path} is not an autoencoder train state (kind={state.get('kind')!r})")
    ae = Autoencoder(AutoencoderConfig(**state["config"]))
    ae.load_state_dict(state["model"])
    return ae.to(device).eval()


def moving_pixels(x: torch.Tensor, frames: int, threshold: float = 0.05) -> torch.Tensor:
    """Where a frame changed from the frame before or to the frame after: frames `x [N*frames,3,H,W]` in
    [-1,1], `frames` consecutive per clip -> bool `[N*frames,1,H,W]`, a change of more than `threshold`
    (of the [-1,1] range) in any channel: an object where it was and where it went."""
    n = x.shape[0] // frames
    c = x[: n * frames].unflatten(0, (n, frames))  # [N,F,3,H,W]
    d = (c[:, 1:] - c[:, :-1]).abs().amax(2, keepdim=True) > threshold  # [N,F-1,1,H,W]
    m = torch.cat([d[:, :1], d], 1) | torch.cat([d, d[:, -1:]], 1)  # frame t: pairs (t-1, t) and (t, t+1)
    return m.flatten(0, 1)


def reconstruction_loss(
    x_hat: torch.Tensor, x: torch.Tensor, moving: torch.Tensor | None = None, share: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + MSE + an L1 on image gradients (keeps wall edges and texture lines sharp). `moving [N,1,H,W]`
    bool and `share` (`--motion-share`): the L1 and MSE are (1 - share) x their mean over every pixel plus
    share x their mean over the moving pixels, however few: a 1-pixel ball is worth as much as the
    screen it moves on."""
    e = x_hat - x
    l1, mse = e.abs().mean(), e.pow(2).mean()
    if moving is not None and share > 0:  # on the device: no host sync, no data-sized indexing
        m = moving.expand_as(e).to(e.dtype)
        n = m.sum()
        on = n > 0  # nothing moves: the plain loss alone
        l1 = torch.where(on, (1 - share) * l1 + share * (e.abs() * m).sum() / n.clamp_min(1), l1)
        mse = torch.where(on, (1 - share) * mse + share * (e.pow(2) * m).sum() / n.clamp_min(1), mse)

    def grads(im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return im[..., 1:, :] - im[..., :-1, :], im[..., :, 1:] - im[..., :, :-1]

    (gy, gx), (ty, tx) = grads(x_hat), grads(x)
    edge = (gy - ty).abs().mean() + (gx - tx).abs().mean()
    loss = l1 + mse + 0.5 * edge
    return loss, {"l1": l1.item(), "mse": mse.item(), "edge": edge.item()}


@torch.no_grad()
def heldout_moving_psnr(ae: Autoencoder, x: torch.Tensor, frames: int, batch: int = 64) -> float | None:
    """PSNR over the held-out pixels that move (`moving_pixels`): what the world model must get right, and
    what a frame-wide PSNR hides when little of the frame moves (a 1-pixel ball). None: nothing moves."""
    if frames < 2:
        return None
    mask = moving_pixels(x, frames)  # [N,1,H,W]
    if not mask.any():
        return None
    ae.eval()
    err, count = 0.0, 0
    for i in range(0, len(mask), batch):
        xb, mb = x[i : i + batch], mask[i : i + batch].expand(-1, 3, -1, -1)
        rec = ae.decode_raw(ae.encode_raw(xb)).float().clamp(-1, 1)
        err += (rec - xb).pow(2)[mb].sum().item()
        count += int(mb.sum())
    ae.train()
    return 10 * math.log10(4.0 / max(err / count, 1e-12))  # peak-to-peak 2 in [-1, 1]


@torch.no_grad()
def heldout_psnr(ae: Autoencoder, x: torch.Tensor, batch: int = 64) -> float:
    ae.eval()
    vals = [
        psnr(ae.decode_raw(ae.encode_raw(x[i : i + batch])).float(), x[i : i + batch], peak=2.0)
        for i in range(0, len(x), batch)
    ]
    ae.train()
    return torch.cat(vals).mean().item()


@torch.no_grad()
def decode_ms_per_frame(ae: Autoencoder, device: torch.device, iters: int = 30) -> float:
    """Median wall time of one decode of a single frame's latent on `device` (fp32, eager)."""
    dec = copy.deepcopy(ae).to(device).eval()
    h, w = dec.cfg.latent_hw
    z = torch.randn(1, dec.cfg.latent_channels, h, w, device=device)
    times = []
    for i in range(iters + 5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        dec.decode(z)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # deliberate host sync: timing
        if i >= 5:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e3


class RoundTrip(nn.Module):
    """encode_raw then decode_raw in one forward: the module DDP wraps (raw latents, as the AE trains on)."""

    def __init__(self, ae: Autoencoder):
        super().__init__()
        self.ae = ae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ae.decode_raw(self.ae.encode_raw(x))  # [B,3,H,W] -> [B,3,H,W]


def collect_frames(batches, n: int) -> torch.Tensor:
    """`n` frames `[n,3,H,W]` in [-1,1] from a (frames, keys) iterator."""
    out, have = [], 0
    while have < n:
        frames, _ = next(batches)
        x = frames_to_model(frames.flatten(0, 1))  # [B,F,H,W,3] -> [B*F,3,H,W]
        out.append(x)
        have += len(x)
    return torch.cat(out)[:n]


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) and return the metrics dict; writes state, plot and metrics under args.out.

    Under torchrun each rank trains on its own data (--batch per rank) and DDP averages the gradients;
    rank 0 alone writes files, times the decoder and shows progress; a --minutes budget ends on rank
    0's clock.
    """
    common.check_positive(steps=args.steps, batch=args.batch, lr=args.lr, minutes=args.minutes)
    if not 0.0 <= getattr(args, "motion_share", 0.0) < 1.0:
        raise UserError(f"--motion-share must be in [0, 1) (0: the plain mean), got {args.motion_share}")
    dist_info, device = distributed.setup_distributed(common.resolve_device(args.device))
    with resume.run_folder(Path(args.out)) as out:
        return _train(args, dist_info, device, out)


def _train(args, dist_info, device, out: Path) -> dict:
    main_rank = dist_info.is_main
    state_path = out / STATE_FILE
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    state = common.open_state(state_path, "autoencoder", args, HPARAMS)
    init_metrics = {}
    if state is not None:
        cfg = AutoencoderConfig(**state["config"])
    elif args.init:
        cfg, init_state, init_metrics = _load_init(args.init)
    else:
        cfg = autoencoder_config(args.preset)
    for flag, field in (("--latent-channels", "latent_channels"), ("--downsample", "downsample")):
        value = getattr(args, field, None)
        if value is None or value == getattr(cfg, field):
            continue
        if state is not None or args.init:
            raise UserError(
                f"{flag} {value}: only a new run picks its {field.replace('_', ' ')}; this one "
                f"{'resumes' if state is not None else 'starts from --init'} with {getattr(cfg, field)}"
            )
        if not 1 <= value <= 256:
            raise UserError(f"{flag} must be in [1, 256], got {value}")
        try:
            cfg = dataclasses.replace(cfg, **{field: value})
        except ValueError as e:
            raise UserError(f"{flag} {value}: {e}") from None
    ds = datasets.open_data(getattr(args, "data", None))
    if ds is not None and state is None and not args.init:  # the dataset's frames set the size
        try:
            cfg = dataclasses.replace(cfg, image_size=datasets.image_size(ds))
        except ValueError as e:
            raise UserError(f"--data {ds.path}: its {ds.width}x{ds.height} frames do not fit: {e}") from None
    ae = Autoencoder(cfg).to(device)  # same seed on every rank; DDP broadcasts rank 0's weights anyway
    opt = torch.optim.AdamW(ae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    step, history, evals = 0, {"step": [], "loss": [], "l1": [], "edge": []}, []
    if state is None and args.init:
        ae.load_state_dict(init_state)
    if state is not None:
        ae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, history, evals = state["step"], state["history"], state["evals"]
        log.info("resumed %s at step %d", state_path, step)

    size = cfg.hw
    fwd = distributed.parallelize(RoundTrip(ae), dist_info, device)
    log.info(
        "autoencoder %s: device %s, %d rank(s) x batch %d",
        args.preset,
        device,
        dist_info.world_size,
        args.batch,
    )
    # Held-out frames come from other seeds than training ever uses, or from the dataset's held-out split
    # (the same on every rank).
    data_seed = distributed.rank_seed(args.seed * 1_000 + step, dist_info)
    held_frames = 4 if ds is None else min(4, ds.frames)  # consecutive frames per held-out clip
    held_batches = datasets.scoring_batches(ds, batch=32, frames=held_frames,
                                            size=size, device=device, seed=10_000_019 + args.seed,
                                            flag="--heldout")  # fmt: skip
    # --motion-share: pairs of consecutive frames (half the clips, the same frames per step), part of the
    # loss on the pixels that move
    pair = 2 if args.motion_share > 0 else 1
    rows = max(1, args.batch // pair)
    if ds is not None:
        side = None if (ds.height, ds.width) == size else size[0]  # resized to the autoencoder's frames
        data = make_loader(str(ds.path), batch=rows, frames=pair, size=side, device=device, seed=data_seed)
    else:
        data = common.game_batches(batch=rows, frames=pair, size=size, device=device, seed=data_seed)
    held = collect_frames(held_batches, args.heldout)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    budget = common.Budget(args.steps, args.minutes)
    warmup = min(200, max(1, args.steps // 20))
    bar = common.progress(args.steps, step, args.no_progress or not main_rank, "autoencoder")
    if not evals:
        evals.append([0, heldout_psnr(ae, held)])  # the untrained baseline
    ae.train()
    t_start, start_step = time.monotonic(), step
    # A time budget ends on rank 0's clock: ranks that stopped apart would hang in the next all-reduce.
    sync_budget = dist_info.enabled and args.minutes is not None
    live = resume.MetricsLog(out, enabled=main_rank)
    stop = resume.StopRequest().install()
    try:
        while not stop.requested and not distributed.agree(
            budget.done(step), dist_info, device, enabled=sync_budget
        ):
            frames, _ = next(data)
            x = frames_to_model(frames.flatten(0, 1))  # [B,F,H,W,3] -> [B*F,3,H,W] (F: 1, or 2 in pairs)
            moving = moving_pixels(x, pair) if pair > 1 else None
            for g in opt.param_groups:
                g["lr"] = args.lr * common.warmup_cosine(step, args.steps, warmup)
            with amp:
                x_hat = fwd(x)
            loss, parts = reconstruction_loss(x_hat.float(), x, moving, args.motion_share)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == 1 or step % args.log_every == 0:
                loss_all = distributed.mean_across_ranks(loss, dist_info).item()  # the global batch's loss
                history["step"].append(step)
                history["loss"].append(loss_all)
                history["l1"].append(parts["l1"])
                history["edge"].append(parts["edge"])
                bar.set_postfix(loss=f"{loss_all:.4f}")
                row = {"step": step, "loss": round(loss_all, 5), "lr": opt.param_groups[0]["lr"]}
                if step % args.log_every == 0:
                    row["heldout_psnr_db"] = round(heldout_psnr(ae, held), 3)  # same weights on every rank
                    mv = heldout_moving_psnr(ae, held, held_frames)
                    row["heldout_moving_psnr_db"] = None if mv is None else round(mv, 3)
                    evals.append([step, row["heldout_psnr_db"]])
                    log.info(
                        "step %d loss %.4f held-out PSNR %.2f dB (moving pixels %s dB)", step, loss_all,
                        row["heldout_psnr_db"], "-" if mv is None else f"{mv:.2f}",
                    )  # fmt: skip
                live.write(**row)
            if step % args.ckpt_every == 0 and main_rank:
                _save(state_path, args, ae, opt, cfg, step, history, evals)
    except KeyboardInterrupt:  # a second Ctrl-C: keep what was trained all the same
        stop.requested = True
    finally:
        stop.restore()  # also when the loop raised: the process's own Ctrl-C comes back
    stop.finish(step)
    bar.close()
    train_seconds = time.monotonic() - t_start

    ae.eval()
    ae.set_latent_stats(held)
    p = heldout_psnr(ae, held)
    moving = heldout_moving_psnr(ae, held, held_frames)
    evals.append([step, p])
    metrics = {
        "preset": init_metrics.get("preset", args.preset) if args.init else args.preset,
        "init": args.init,
        "image_size": list(cfg.hw),
        "latent_shape": [cfg.latent_channels, *cfg.latent_hw],
        "steps": step,
        "batch": args.batch,
        "ranks": dist_info.world_size,
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": round((step - start_step) / max(train_seconds, 1e-6), 2),
        "device": str(device),
        "heldout_frames": len(held),
        "heldout_psnr_db": round(p, 2),
        "heldout_moving_psnr_db": None if moving is None else round(moving, 2),  # the pixels that move
        "motion_share": args.motion_share,
        "params_encoder": sum(q.numel() for q in ae.encoder.parameters()),
        "params_decoder": sum(q.numel() for q in ae.decoder.parameters()),
        "dataset": None if ds is None else ds.manifest,  # None: frames rendered by the game
    }
    if main_rank:  # timed and written once, while the other ranks wait (they would share the CPU)
        metrics["decode_ms_per_frame_cpu"] = round(decode_ms_per_frame(ae, torch.device("cpu")), 3)
        if device.type == "cuda":
            metrics["decode_ms_per_frame_cuda"] = round(decode_ms_per_frame(ae, device), 3)
        _save(state_path, args, ae, opt, cfg, step, history, evals, metrics)
        common.save_loss_plot(
            history, out / "autoencoder_loss.png", f"autoencoder ({args.preset}): held-out PSNR {p:.2f} dB"
        )
        common.write_json(metrics, out / "autoencoder.json")
        log.info(
            "autoencoder: %d steps, held-out PSNR %.2f dB (moving pixels %s dB), decode %.2f ms/frame on CPU",
            step,
            p,
            "-" if moving is None else f"{moving:.2f}",
            metrics["decode_ms_per_frame_cpu"],
        )
    distributed.barrier(dist_info)  # no rank returns before the train state is on disk
    return metrics


HPARAMS = ("lr", "batch", "seed", "heldout", "motion_share")


def _load_init(source: str):
    """(config, float state dict, metrics) of the autoencoder in a shipped checkpoint or autoencoder.pt."""
    if str(source).endswith(".pt"):
        state = common.load_state(source, flag="--init")
        if state.get("kind") != "autoencoder":
            raise UserError(f"--init {source} is not an autoencoder train state (kind={state.get('kind')!r})")
        return AutoencoderConfig(**state["config"]), state["model"], state.get("metrics", {})
    from worldsim.checkpoint import load_checkpoint

    ckpt = load_checkpoint(source)
    log.info("--init %s: starting from the autoencoder of %s (--preset is ignored)", source, ckpt.path)
    return ckpt.config.autoencoder, ckpt.float_state("autoencoder"), ckpt.metrics.get("autoencoder", {})


def _save(path, args, ae, opt, cfg, step, history, evals, metrics=None) -> None:
    common.atomic_save(
        {
            "kind": "autoencoder",
            "hparams": {k: getattr(args, k) for k in HPARAMS},
            "step": step,
            "config": dataclasses.asdict(cfg),
            "model": ae.state_dict(),
            "opt": opt.state_dict(),
            "history": history,
            "evals": evals,
            "metrics": metrics or {},
        },
        path,
    )


def main(args: argparse.Namespace) -> int:
    dist_info = distributed.info_from_env()
    try:
        train(args)
    finally:
        distributed.cleanup(dist_info)
    return 0
