"""Train the teacher DiT: rectified flow with diffusion forcing, block-causal as deployed (docs/design.md §7.2)."""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import time
from pathlib import Path

import torch

from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.model.config import ModelConfig, get_preset
from worldsim.model.dit import DiT
from worldsim.train import common, datasets, distributed, resume
from worldsim.train import teacher_start as start
from worldsim.train.corrupt import ContextRecipe, corrupt_context, sample_levels
from worldsim.train.flow import (
    encode_clips,
    flow_matching_loss,
    sample_t,
    token_change,
    train_step,
    validation_loss,
)
from worldsim.train.options import add_teacher_arguments as add_arguments  # noqa: F401 (stage protocol)
from worldsim.train.store import LatentBatches, store_spec

log = logging.getLogger(__name__)

STATE_FILE = "teacher.pt"


def build_dit(cfg):
    return DiT(cfg)


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) the teacher; writes its train states, metrics.jsonl, the loss plot and
    teacher.json under args.out (docs/design.md, training)."""
    common.check_positive(steps=args.steps, batch=args.batch, lr=args.lr, minutes=args.minutes)
    common.check_positive(stop_after=args.stop_after)
    dist_info, device = distributed.setup_distributed(common.resolve_device(args.device))
    with resume.run_folder(Path(args.out)) as out:
        return _train(args, dist_info, device, out)


def _train(args, dist_info, device, out: Path) -> dict:
    main_rank = dist_info.is_main
    state_path = out / STATE_FILE
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    state = resume.open_resume(out, "teacher", STATE_FILE, args.resume)
    if state is not None:
        if state.get("kind") != "teacher":
            raise UserError(
                f"{out} holds a {state.get('kind')!r} train state, not a teacher's; pick another --out"
            )
        common.restore_hparams(args, state.get("hparams", {}), HPARAMS)

    init = None  # the DiT weights --init starts from
    budget_before = None  # the cumulative budget of what this run continues
    if state is not None:
        ae_metrics = state.get("autoencoder_metrics", {})
        cfg = ModelConfig.from_dict(state["config"])
        ae = Autoencoder(cfg.autoencoder)
        ae.load_state_dict(state["autoencoder"])
        ae = ae.to(device).eval()
        start.check_resume_mask(cfg, args)
        budget_before = state.get("budget")
    elif args.init:
        cfg, init, ae, ae_metrics, budget_before = start.load_init(args, device)
    else:
        try:
            cfg = get_preset(args.preset)
        except ValueError as e:
            raise UserError(f"--preset: {e}") from e
        if not args.autoencoder:
            raise UserError(
                "--autoencoder is required: the autoencoder.pt of `worldsim train autoencoder`, or a shipped "
                "checkpoint whose autoencoder to use (e.g. --autoencoder tiny)"
            )
        ae, ae_metrics = start.load_autoencoder(args.autoencoder, device)
        if ae.cfg != cfg.autoencoder:
            log.warning(
                "the autoencoder's config differs from preset %s's; using the autoencoder's", args.preset
            )
            cfg = start.with_autoencoder(cfg, ae.cfg, args.patch_size)
        elif args.patch_size is not None:
            cfg = start.with_autoencoder(cfg, ae.cfg, args.patch_size)
    if (state is not None or args.init) and args.patch_size not in (None, cfg.patch_size):
        raise UserError(
            f"--patch-size {args.patch_size}: the run {'being resumed' if state is not None else 'of --init'} "
            f"has patch size {cfg.patch_size} (its weights' shapes); drop --patch-size"
        )
    if state is None:
        cfg = start.with_mask(cfg, args)
    ds = datasets.open_data(args.data)
    if ds is not None:  # the keys the dataset recorded; a run that already has keys must match them
        origin = (
            f"--resume {state_path}" if state is not None else f"--init {args.init}" if args.init else None
        )
        cfg = datasets.with_keys(cfg, ds, fresh=origin is None, origin=origin)
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
    if args.attention:
        model.attention = args.attention  # the training forward's backend (the config keeps the deployed one)
    if init is not None:  # same parameters whatever the mask (only the attention pattern changes), and
        common.load_grown(model, init, f"--init {args.init}")  # --prev-frame adds its zero projection
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
    resumed_without_moments = None  # the step a resume from the compact state began at
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        step, history, evals = state["step"], state["history"], state["evals"]
        if state.get("opt") is not None:
            opt.load_state_dict(state["opt"])
        else:
            resumed_without_moments = step
        # Same --steps as before: keep the (possibly time-fitted) schedule; new --steps: a new schedule.
        if state.get("hparams", {}).get("steps") == args.steps:
            total = state.get("schedule_total", args.steps)
        log.info("resumed %s at step %d", out, step)
    ddp = distributed.parallelize(model, dist_info, device)
    if dist_info.enabled:  # noise levels and key dropout of their own per rank, like the data
        torch.manual_seed(distributed.rank_seed(args.seed * 1_000 + step, dist_info))

    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "teacher %s: %.2fM params, clip %d frames, window %d (local window %d, global every %d), device %s, "
        "%d rank(s) x batch %d, data: %s",
        cfg.name,
        n_params / 1e6,
        clip,
        cfg.window,
        cfg.local_window,
        cfg.global_every,
        device,
        dist_info.world_size,
        args.batch,
        args.source,
    )

    # A fixed held-out batch (other seeds, or the dataset's held-out split), fixed noise and levels: a
    # comparable validation loss.
    g = torch.Generator(device=device).manual_seed(1234)
    val_batches = datasets.scoring_batches(ds, batch=min(16, args.batch), frames=clip, size=cfg.image_hw,
                                           device=device, seed=20_000_033 + args.seed, flag="--clip-frames")  # fmt: skip
    val_frames, val_keys = next(val_batches)
    val_z = encode_clips(ae, val_frames)
    val_t = sample_t(val_z.shape[:2], shift=cfg.schedule_shift, context_prob=args.context_prob,
                     context_max=args.context_max, device=device, generator=g)  # fmt: skip
    val_noise = torch.randn(val_z.shape, device=device, generator=g)

    data = LatentBatches(
        args.source,
        ae=ae,
        batch=args.batch,
        frames=clip,
        num_keys=cfg.num_keys,
        device=device,
        seed=distributed.rank_seed(args.seed * 1_000 + step, dist_info),
        spec=store_spec(args, device, clip),
        data=args.data,
    )
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    if not evals:
        evals.append([0, validation_loss(ema, val_z, val_t, val_keys, val_noise, amp)])  # untrained baseline
    recipe = ContextRecipe.from_flags(args)
    plain = common.unwrap(model)  # the own-prediction pass: eager, no gradient, outside DDP's bookkeeping
    budget = common.Budget(args.steps, args.minutes)  # compile time counts: the run cannot overrun
    stop_at = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    fwd = _compiled(ddp, model, data, cfg, args, amp, device) if args.compile else ddp
    warmup = min(args.warmup, max(1, args.steps // 10))
    bar = common.progress(args.steps, step, args.no_progress or not main_rank, "teacher")
    live = resume.MetricsLog(out, enabled=main_rank)
    model.train()
    t_start, start_step, t_warm = time.monotonic(), step, None
    t_log, step_log = t_start, step
    starts = None if ds is None else {"frames": datasets.start_frames(ds, cfg.image_hw[0])}
    saver = functools.partial(_save, state_path, args, cfg, model, ema, opt, ae, ae_metrics, starts)

    def run_budget(metrics_now=None) -> dict:
        return resume.add_run(budget_before, steps=step - start_step, seconds=time.monotonic() - t_start,
                              clips=(step - start_step) * args.batch * dist_info.world_size, device=device)  # fmt: skip

    # A time budget ends on rank 0's clock: ranks that stopped apart would hang in the next all-reduce.
    sync_budget = dist_info.enabled and args.minutes is not None
    stop = resume.StopRequest().install()
    try:
        while (
            step < stop_at
            and not stop.requested
            and not distributed.agree(budget.done(step), dist_info, device, enabled=sync_budget)
        ):
            z0, keys = data.next()
            t, ctx = sample_levels(z0.shape[:2], shift=cfg.schedule_shift, recipe=recipe, device=device)
            with amp:
                z_in, mask = corrupt_context(plain, z0, ctx, keys, recipe)
            drop = torch.rand(t.shape, device=device) < args.key_dropout
            if args.minutes is not None and step - start_step in (50, 200, 1000):
                # Time budget: fit the cosine schedule to the steps the remaining minutes allow.
                rate = (step - start_step) / max(1e-6, time.monotonic() - t_start)
                total = max(step + 1, min(total, step + int(rate * (budget.seconds - budget.elapsed))))
                total = distributed.agree(total, dist_info, device)  # one LR schedule for all ranks
            lr = (
                args.lr
                * common.warmup_cosine(step, total, warmup)
                * resume.rewarm(step, resumed_without_moments)
            )
            for grp in opt.param_groups:
                grp["lr"] = lr
            loss, gnorm = train_step(fwd, model, opt, z_in, t, keys, drop, grad_clip=args.grad_clip, amp=amp,
                                     mask=mask, change=token_change(z0) if args.motion_share else None,
                                     share=args.motion_share)  # fmt: skip
            common.ema_update(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)
            data.after_step(step)
            if step % 10 == 0 or step == 1 or step % args.log_every == 0:
                loss_all = distributed.mean_across_ranks(loss, dist_info).item()  # the global batch's loss
                history["step"].append(step)
                history["loss"].append(loss_all)
                bar.set_postfix(loss=f"{loss_all:.4f}", gnorm=f"{gnorm.item():.2f}")
                now = time.monotonic()
                rate = (step - step_log) * args.batch * dist_info.world_size / max(now - t_log, 1e-6)
                row = {"step": step, "loss": round(loss_all, 5), "lr": lr, "grad_norm": round(gnorm.item(), 4),
                       "clips_per_second": round(rate, 1)}  # fmt: skip
                t_log, step_log = now, step
                if step % args.log_every == 0:
                    v = validation_loss(ema, val_z, val_t, val_keys, val_noise, amp)  # same EMA on all ranks
                    evals.append([step, v])
                    row["ema_val_loss"] = round(v, 5)
                    log.info("step %d loss %.4f ema val loss %.4f lr %.2e", step, loss_all, v, lr)
                live.write(**row)
            if step - start_step == WARM_STEPS:  # after the loss sync above: compile and warmup are behind
                t_warm = time.monotonic()
            if step % args.ckpt_every == 0 and main_rank:
                saver(step, history, evals, total, run_budget())
    except KeyboardInterrupt:  # a second Ctrl-C: keep what was trained all the same
        stop.requested = True
    finally:
        stop.restore()  # also when the loop raised: the process's own Ctrl-C comes back
    interrupted = stop.finish(step)
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
    spent = run_budget()
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
        "context_prob": args.context_prob,
        "context_max": args.context_max,
        **{k: getattr(args, k) for k in RECIPE},
        "data": data.describe(),
        "dataset": None if ds is None else ds.manifest,  # None: trajectories rendered by the game
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
        "budget": spent,
        "interrupted": interrupted,
    }
    if main_rank:  # one writer: the others hold the same weights
        saver(step, history, evals, total, spent, metrics)
        live.write(step=step, ema_val_loss=round(v, 5), final=True)
        common.save_loss_plot(
            _with_val(history, evals), out / "teacher_loss.png", f"teacher ({cfg.name}): flow-matching loss"
        )
        common.write_json(metrics, out / "teacher.json")
    distributed.barrier(dist_info)  # no rank returns before the train state is on disk
    log.info("teacher: %d steps in %.0f s, ema val loss %.4f", step, seconds, v)
    return metrics


def _compiled(wrapped, model, data, cfg, args, amp, device):
    """torch.compile(wrapped), tried on one training batch first; on failure, `wrapped` eagerly (logged)."""
    fwd = torch.compile(wrapped, dynamic=False)  # static shapes: the store's clips never change size
    try:
        z0, keys = data.next()
        t = sample_t(z0.shape[:2], shift=cfg.schedule_shift, context_prob=args.context_prob,
                     context_max=args.context_max, device=device)  # fmt: skip
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

# the context recipe's flags (corrupt.py) and the objective's weighting of what moves (flow.py)
RECIPE = (
    "context_aug_prob",
    "context_aug_max",
    "context_offset",
    "context_offset_prob",
    "own_prob",
    "motion_share",
)
HPARAMS = (
    "lr",
    "batch",
    "clip_frames",
    "key_dropout",
    "context_prob",
    "context_max",
    *RECIPE,
    "ema_decay",
    "warmup",
    "grad_clip",
    "seed",
)


def _save(
    path,
    args,
    cfg,
    model,
    ema,
    opt,
    ae,
    ae_metrics,
    starts,
    step,
    history,
    evals,
    total,
    budget,
    metrics=None,
) -> None:
    """The full train state (teacher.pt) and the compact one beside it (resume.py); `starts`: the
    dataset's episode-start frames the export encodes as start latents (None: the game's spawns)."""
    extra = {} if starts is None else {"start_frames": starts}
    meta = {
        "kind": "teacher",
        "hparams": {k: getattr(args, k) for k in (*HPARAMS, "steps")},
        "step": step,
        "autoencoder_metrics": ae_metrics,
        "history": history,
        "evals": evals,
        "schedule_total": total,
        "budget": budget,
        "metrics": metrics or {},
    }
    weights, averaged = common.unwrap(model).state_dict(), ema.state_dict()
    common.atomic_save(
        {**meta, "config": cfg.to_dict(), "model": weights, "ema": averaged, "opt": opt.state_dict(),
         "autoencoder": ae.state_dict(), **extra},
        path,
    )  # fmt: skip
    resume.save_compact(resume.compact_path(path.parent, "teacher"), config=cfg, model=weights, ema=averaged,
                        frozen={"autoencoder": ae.state_dict(), **extra}, meta=meta)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    dist_info = distributed.info_from_env()
    try:
        metrics = train(args)
        if metrics.get("interrupted"):
            return 130  # the state is saved; the shell still learns the run did not finish
        if args.export and dist_info.is_main:
            from worldsim.train.export import export

            export(Path(args.out) / STATE_FILE, args.export)
    finally:
        distributed.cleanup(dist_info)
    return 0
