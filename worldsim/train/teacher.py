"""Train the teacher DiT: rectified flow with diffusion forcing, block-causal as deployed (DESIGN §6.2)."""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

import torch

from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.train import common, distributed
from worldsim.train.autoencoder import load_autoencoder
from worldsim.train.flow import encode_clips, flow_matching_loss, sample_t, train_step, validation_loss

log = logging.getLogger(__name__)

STATE_FILE = "teacher.pt"


def build_dit(cfg):
    from worldsim.model.dit import DiT

    return DiT(cfg)


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) the teacher; writes teacher.pt, the loss plot and teacher.json under args.out."""
    from worldsim.model.config import ModelConfig, get_preset

    common.check_positive(steps=args.steps, batch=args.batch, lr=args.lr, minutes=args.minutes)
    dist_info, device = distributed.setup_distributed(common.resolve_device(args.device))
    main_rank = dist_info.is_main
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    state = common.open_state(state_path, "teacher", args, HPARAMS)

    init = None  # the DiT weights --init starts from
    if state is not None:
        ae_metrics = state.get("autoencoder_metrics", {})
        cfg = ModelConfig.from_dict(state["config"])
        ae = Autoencoder(cfg.autoencoder)
        ae.load_state_dict(state["autoencoder"])
        ae = ae.to(device).eval()
        _check_resume_mask(cfg, args)
    elif args.init:
        cfg, init, ae, ae_metrics = _load_init(args, device)
    else:
        try:
            cfg = get_preset(args.preset)
        except ValueError as e:
            raise UserError(f"--preset: {e}") from e
        if not args.autoencoder:
            raise UserError(
                "--autoencoder PATH is required (the autoencoder.pt of `worldsim train autoencoder`)"
            )
        ae = load_autoencoder(args.autoencoder, device)
        ae_metrics = common.load_state(args.autoencoder, flag="--autoencoder").get("metrics", {})
        if ae.cfg != cfg.autoencoder:
            log.warning(
                "the autoencoder's config differs from preset %s's; using the autoencoder's", args.preset
            )
            cfg = cfg.replace(autoencoder=ae.cfg)
    if state is None:
        cfg = _with_mask(cfg, args)
    for p in ae.parameters():
        p.requires_grad_(False)

    clip = args.clip_frames or cfg.window + max(1, cfg.window // 2)
    if clip % cfg.block_frames:
        raise UserError(f"--clip-frames {clip} must be a multiple of block_frames={cfg.block_frames}")
    if clip <= cfg.window:
        log.warning(
            "--clip-frames %d <= window %d: the attention window never slides in training", clip, cfg.window
        )

    model = build_dit(cfg).to(device)  # same seed on every rank; DDP broadcasts rank 0's weights anyway
    if init is not None:  # same parameters whatever the mask: only the attention pattern changes
        model.load_state_dict(init)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay_params = [p for n, p in model.named_parameters() if p.ndim >= 2]
    other_params = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": 0.01}, {"params": other_params, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    step, history, evals, total = 0, {"step": [], "loss": []}, [], args.steps
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, history, evals = state["step"], state["history"], state["evals"]
        # Same --steps as before: keep the (possibly time-fitted) schedule; new --steps: a new schedule.
        if state.get("hparams", {}).get("steps") == args.steps:
            total = state.get("schedule_total", args.steps)
        log.info("resumed %s at step %d", state_path, step)
    ddp = distributed.parallelize(model, dist_info, device)
    if dist_info.enabled:  # noise levels and key dropout of their own per rank, like the data
        torch.manual_seed(distributed.rank_seed(args.seed * 1_000 + step, dist_info))

    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "teacher %s: %.2fM params, clip %d frames, window %d (local window %d, global every %d), device %s, "
        "%d rank(s) x batch %d",
        cfg.name,
        n_params / 1e6,
        clip,
        cfg.window,
        cfg.local_window,
        cfg.global_every,
        device,
        dist_info.world_size,
        args.batch,
    )

    # A fixed held-out batch (other seeds), fixed noise and levels: a comparable validation loss.
    g = torch.Generator(device=device).manual_seed(1234)
    val_frames, val_keys = next(
        common.game_batches(
            batch=min(16, args.batch),
            frames=clip,
            size=cfg.image_hw,
            device=device,
            seed=20_000_033 + args.seed,
        )
    )
    val_z = encode_clips(ae, val_frames)
    val_t = sample_t(
        val_z.shape[:2],
        shift=cfg.schedule_shift,
        context_prob=args.context_prob,
        context_max=args.context_max,
        device=device,
        generator=g,
    )
    val_noise = torch.randn(val_z.shape, device=device, generator=g)

    data = common.game_batches(
        batch=args.batch,
        frames=clip,
        size=cfg.image_hw,
        device=device,
        seed=distributed.rank_seed(args.seed * 1_000 + step, dist_info),
    )
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    if not evals:
        evals.append([0, validation_loss(ema, val_z, val_t, val_keys, val_noise, amp)])  # untrained baseline
    budget = common.Budget(args.steps, args.minutes)  # compile time counts: the run cannot overrun
    fwd = _compiled(ddp, model, data, ae, cfg, args, amp, device) if args.compile else ddp
    warmup = min(args.warmup, max(1, args.steps // 10))
    bar = common.progress(args.steps, step, args.no_progress or not main_rank, "teacher")
    model.train()
    t_start, start_step, t_warm = time.monotonic(), step, None
    # A time budget ends on rank 0's clock: ranks that stopped apart would hang in the next all-reduce.
    sync_budget = dist_info.enabled and args.minutes is not None
    while not distributed.agree(budget.done(step), dist_info, device, enabled=sync_budget):
        z0, t, keys = _next_batch(data, ae, cfg, args, device)
        drop = torch.rand(t.shape, device=device) < args.key_dropout
        if args.minutes is not None and step - start_step in (50, 200, 1000):
            # Time budget: fit the cosine schedule to the steps the remaining minutes allow.
            rate = (step - start_step) / max(1e-6, time.monotonic() - t_start)
            total = max(step + 1, min(total, step + int(rate * (budget.seconds - budget.elapsed))))
            total = distributed.agree(total, dist_info, device)  # one LR schedule for all ranks
        for grp in opt.param_groups:
            grp["lr"] = args.lr * common.warmup_cosine(step, total, warmup)
        loss, gnorm = train_step(fwd, model, opt, z0, t, keys, drop, grad_clip=args.grad_clip, amp=amp)
        common.ema_update(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))
        step += 1
        bar.update(1)
        if step % 10 == 0 or step == 1:
            loss_all = distributed.mean_across_ranks(loss, dist_info).item()  # the global batch's loss
            history["step"].append(step)
            history["loss"].append(loss_all)
            bar.set_postfix(loss=f"{loss_all:.4f}", gnorm=f"{gnorm.item():.2f}")
        if step % args.log_every == 0:
            v = validation_loss(ema, val_z, val_t, val_keys, val_noise, amp)  # EMA is the same on all ranks
            evals.append([step, v])
            log.info(
                "step %d loss %.4f ema val loss %.4f lr %.2e", step, loss.item(), v, opt.param_groups[0]["lr"]
            )
        if step - start_step == WARM_STEPS:  # after the loss sync above: compile and warmup are behind
            t_warm = time.monotonic()
        if step % args.ckpt_every == 0 and main_rank:
            _save(state_path, args, cfg, model, ema, opt, ae, ae_metrics, step, history, evals, total)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # host sync: the timing covers the queued steps
    seconds = time.monotonic() - t_start
    steady = None
    if t_warm is not None and step - start_step > WARM_STEPS:
        rate = (step - start_step - WARM_STEPS) / max(time.monotonic() - t_warm, 1e-6)
        steady = round(rate * args.batch * dist_info.world_size, 2)

    v = validation_loss(ema, val_z, val_t, val_keys, val_noise, amp)
    evals.append([step, v])
    metrics = {
        "preset": cfg.name,
        "params": n_params,
        "steps": step,
        "batch": args.batch,
        "ranks": dist_info.world_size,
        "clip_frames": clip,
        "window": cfg.window,
        "sinks": cfg.sinks,
        "local_window": cfg.local_window,
        "global_every": cfg.global_every,
        "init": str(args.init) if args.init else None,
        "lr": args.lr,
        "ema_decay": args.ema_decay,
        "key_dropout": args.key_dropout,
        "train_seconds_this_run": round(seconds, 1),
        "steps_per_second": round((step - start_step) / max(seconds, 1e-6), 2),
        "clips_per_second": round(
            (step - start_step) * args.batch * dist_info.world_size / max(seconds, 1e-6), 2
        ),
        # Clips per second over all ranks after the first WARM_STEPS steps (compile, cuDNN autotune).
        "steady_clips_per_second": steady,
        "final_loss": round(history["loss"][-1], 5) if history["loss"] else None,
        "ema_val_loss": round(v, 5),
        "device": str(device),
    }
    if main_rank:  # one writer: the others hold the same weights
        _save(state_path, args, cfg, model, ema, opt, ae, ae_metrics, step, history, evals, total, metrics)
        common.save_loss_plot(
            _with_val(history, evals), out / "teacher_loss.png", f"teacher ({cfg.name}): flow-matching loss"
        )
        common.write_json(metrics, out / "teacher.json")
    distributed.barrier(dist_info)  # no rank returns before the train state is on disk
    log.info("teacher: %d steps in %.0f s, ema val loss %.4f", step, seconds, v)
    return metrics


def _with_mask(cfg, args):
    """The config with the command line's sparse-attention fields (None: keep the config's)."""
    changes = {
        k: getattr(args, k)
        for k in ("window", "local_window", "global_every")
        if getattr(args, k, None) is not None
    }
    if not changes:
        return cfg
    try:
        return cfg.replace(**changes)
    except ValueError as e:
        raise UserError(f"--window/--local-window/--global-every: {e}") from e


def _check_resume_mask(cfg, args) -> None:
    for k in ("window", "local_window", "global_every"):
        given = getattr(args, k, None)
        if given is not None and given != getattr(cfg, k):
            flag = "--" + k.replace("_", "-")
            raise UserError(
                f"{flag} {given}: the run being resumed trains with {k}={getattr(cfg, k)}; drop {flag} "
                f"or start a new --out with --init from this run's teacher.pt"
            )


def _load_init(args, device):
    """(config, DiT state dict, autoencoder, its metrics) from --init: a teacher.pt or a checkpoint."""
    from worldsim.train.sf_state import load_teacher

    if str(args.init).endswith(".pt") and not Path(args.init).is_file():
        raise UserError(
            f"--init {args.init}: no such file; pass the teacher.pt of a `worldsim train teacher` run "
            f"or a shipped checkpoint (.safetensors)"
        )
    try:
        cfg, dit, ae, info = load_teacher(args.init, device)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--init {args.init}: {e}") from e
    if args.autoencoder:
        log.warning("--init %s: using its own autoencoder, not --autoencoder %s", args.init, args.autoencoder)
    log.info(
        "--init %s: starting from its %s weights and autoencoder (--preset is ignored)", args.init, cfg.name
    )
    state = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    return cfg, state, ae, info.get("autoencoder_metrics", {})


def _next_batch(data, ae, cfg, args, device):
    """One training batch: clean latents z0 [B,F,C,h,w], noise levels t [B,F], keys [B,F,K]."""
    frames, keys = next(data)
    z0 = encode_clips(ae, frames)
    t = sample_t(
        z0.shape[:2],
        shift=cfg.schedule_shift,
        context_prob=args.context_prob,
        context_max=args.context_max,
        device=device,
    )
    return z0, t, keys


def _compiled(wrapped, model, data, ae, cfg, args, amp, device):
    """torch.compile(wrapped), tried on one training batch first; on failure, `wrapped` eagerly (logged)."""
    fwd = torch.compile(wrapped)
    try:
        z0, t, keys = _next_batch(data, ae, cfg, args, device)
        with amp:
            loss = flow_matching_loss(fwd, z0, t, keys, torch.zeros_like(t, dtype=torch.bool))
        loss.backward()
    except Exception as e:  # any compiler failure: training eagerly beats not training
        log.warning(
            "torch.compile failed (%s: %s); training eagerly", type(e).__name__, str(e).splitlines()[0][:200]
        )
        fwd = wrapped
    for p in model.parameters():
        p.grad = None
    return fwd


@torch.no_grad()
def _with_val(history: dict, evals: list) -> dict:
    """The train loss plus the EMA validation loss resampled onto the logged steps."""
    if not evals:
        return history
    val_at = dict((int(s), v) for s, v in evals)
    ys, last = [], float("nan")
    for s in history["step"]:
        last = val_at.get(int(s), last)
        ys.append(last)
    return {**history, "ema val": ys}


WARM_STEPS = 20  # steps left out of the steady-state throughput (a multiple of 10: the loss sync)

HPARAMS = (
    "lr",
    "batch",
    "clip_frames",
    "key_dropout",
    "context_prob",
    "context_max",
    "ema_decay",
    "warmup",
    "grad_clip",
    "seed",
)


def _save(
    path, args, cfg, model, ema, opt, ae, ae_metrics, step, history, evals, total, metrics=None
) -> None:
    common.atomic_save(
        {
            "kind": "teacher",
            "hparams": {k: getattr(args, k) for k in (*HPARAMS, "steps")},
            "step": step,
            "config": cfg.to_dict(),
            "model": common.unwrap(model).state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "autoencoder": ae.state_dict(),
            "autoencoder_metrics": ae_metrics,
            "history": history,
            "evals": evals,
            "schedule_total": total,
            "metrics": metrics or {},
        },
        path,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_common_arguments(p, steps=20_000, batch=32, lr=5e-4)
    p.add_argument(
        "--autoencoder", default=None, metavar="PATH", help="autoencoder.pt from `worldsim train autoencoder`"
    )
    p.add_argument(
        "--clip-frames", type=int, default=None, help="frames per training clip (default 1.5 x window)"
    )
    p.add_argument(
        "--key-dropout", type=float, default=0.1, help="fraction of frames trained with the null key state"
    )
    p.add_argument(
        "--context-prob", type=float, default=0.5, help="fraction of frames at a small (context) noise level"
    )
    p.add_argument("--context-max", type=float, default=0.1, help="largest context noise level")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the exported weights")
    p.add_argument("--warmup", type=int, default=500, help="LR warmup steps (at most steps/10)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT for training")
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this teacher's weights (teacher.pt or .safetensors; its config and autoencoder), "
        "e.g. a dense teacher fine-tuned with --local-window",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="W",
        help="attention window in frames (default: the preset's or --init's); the cache deploys the same",
    )
    p.add_argument(
        "--local-window",
        type=int,
        default=None,
        metavar="L",
        help="sparse attention: local layers see the last L frames (+ sinks); 0 = dense (default: config's)",
    )
    p.add_argument(
        "--global-every",
        type=int,
        default=None,
        metavar="G",
        help="with --local-window: every G-th layer sees the whole window (0 = all layers local)",
    )
    p.add_argument(
        "--export",
        default=None,
        metavar="FILE",
        help="after training, export the EMA model to FILE (.safetensors)",
    )


def main(args: argparse.Namespace) -> int:
    dist_info = distributed.info_from_env()
    try:
        train(args)
        if args.export and dist_info.is_main:
            from worldsim.train.export import export

            export(Path(args.out) / STATE_FILE, args.export)
    finally:
        distributed.cleanup(dist_info)
    return 0
