"""Self-forcing distillation of the few-step student (docs/design.md §7.3): DMD on its own KV-cached rollouts.

The student starts from the teacher and rolls out autoregressively exactly as `NeuralWorld` runs
(rollout.py: the ring-buffer KVCache, the deployed window and few-step schedule), with a random exit
step per frame that keeps gradient while earlier steps and cache writes run without it. Rollouts are
streamed by default (sf_data.py, streaming.py): every batch row continues its rollout across iterations
for `--rollout-frames` frames (many windows), `--chunk` frames an iteration with gradient on that chunk
only, restarts staggered, `--idle-fraction` of them with no key held. Loss: DMD with the teacher as real
score and a critic (fake score, initialised from the teacher) trained on the student's rollouts,
`--critic-steps` critic updates per generator update (dmd.py), plus a regression to the true latents on
the same keys (`--regression-weight`: the real game's, or the recorded frames of `--data`).
`--rollout-frames 0` rolls out `--frames` fresh frames every iteration; `--context true` or
`diffusion-forced` trains the same student on ground-truth history instead: the baselines.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

import torch

from worldsim.data.dataset import Dataset
from worldsim.errors import UserError
from worldsim.model.config import ModelConfig
from worldsim.sampling import schedule_for
from worldsim.train import common, datasets, resume
from worldsim.train.dmd import critic_loss, dmd_loss, sample_levels
from worldsim.train.options import CONTEXTS
from worldsim.train.options import add_self_forcing_arguments as add_arguments  # noqa: F401 (stage protocol)
from worldsim.train.sf_data import FreshRollouts, StreamedRollouts, clip_frames, dataset_manifest, open_data
from worldsim.train.sf_state import (
    HPARAMS,
    STATE_FILE,
    default_frames,
    load_student,
    load_teacher,
    save_state,
)
from worldsim.world import KEY_NAMES

log = logging.getLogger(__name__)


def _settings(
    args: argparse.Namespace, cfg: ModelConfig, device: torch.device, state: dict | None
) -> ModelConfig:
    """Resolve the flags left unset (they depend on the device, the teacher and the mode), check them,
    and return the config the student trains and exports with (its context noise level)."""
    if args.data is None and tuple(cfg.key_names) != KEY_NAMES:
        raise UserError(
            f"--data is required: the teacher's keys {list(cfg.key_names)} are not the built-in game's; "
            "pass the dataset it was trained on (--data DIR)"
        )
    if args.rollout_frames is None:
        before = state is not None and "rollout_frames" not in state.get("hparams", {})  # a pre-streaming run
        fresh = args.context != "self" or args.frames is not None or before
        args.rollout_frames = 0 if fresh else 256 if device.type == "cuda" else 8 * cfg.window
    R = args.rollout_frames
    if R < 0:
        raise UserError(f"--rollout-frames must be >= 0 (0: fresh rollouts of --frames), got {R}")
    if R and args.context != "self":
        raise UserError(
            f"--rollout-frames {R} streams the student's own frames; the --context {args.context} baseline "
            "trains on true history: pass --rollout-frames 0"
        )
    if R and args.frames is not None:
        raise UserError(
            f"--frames {args.frames} sets fresh rollouts; streaming takes --rollout-frames and --chunk "
            "(or pass --rollout-frames 0 to roll out --frames fresh frames)"
        )
    if R:
        Fb = cfg.block_frames
        half = max(Fb, cfg.window // 2 // Fb * Fb)
        args.chunk = args.chunk or half
        if args.chunk <= 0 or args.chunk % Fb or R % args.chunk:
            raise UserError(
                f"--chunk {args.chunk} must be a positive multiple of the block ({Fb} frames) dividing "
                f"--rollout-frames {R}; pass e.g. --chunk {half} with --rollout-frames {max(R // half, 1) * half}"
            )
        if args.idle_fraction is None:
            args.idle_fraction = 0.0 if args.data else 0.15
        if not 0.0 <= args.idle_fraction <= 1.0:
            raise UserError(f"--idle-fraction must be in [0, 1], got {args.idle_fraction}")
        if args.idle_rollout_frames is None:
            args.idle_rollout_frames = R
        if args.idle_rollout_frames < args.chunk or args.idle_rollout_frames % args.chunk:
            raise UserError(
                f"--idle-rollout-frames {args.idle_rollout_frames} must be a positive multiple of --chunk "
                f"{args.chunk}; pass e.g. --idle-rollout-frames {4 * R}"
            )
        if args.idle_dmd < 0:
            raise UserError(f"--idle-dmd must be >= 0 (the DMD weight on idle rollouts), got {args.idle_dmd}")
        if args.data and args.idle_fraction:
            raise UserError(
                f"--idle-fraction {args.idle_fraction} with --data: a recording holds no frames for keys it "
                "did not hold; pass --idle-fraction 0 (its recorded idle stretches still train)"
            )
    else:
        for flag, v in (("--chunk", args.chunk), ("--idle-fraction", args.idle_fraction),
                        ("--idle-rollout-frames", args.idle_rollout_frames)):  # fmt: skip
            if v is not None:
                raise UserError(
                    f"{flag} {v} shapes streamed rollouts; drop it or stream (--rollout-frames N)"
                )
        args.frames = args.frames or default_frames(cfg)
    if args.regression_weight is None:
        args.regression_weight = 1.0 if R else 0.0
    if args.regression_horizon < 0 or (args.regression_horizon and not R):
        raise UserError(
            f"--regression-horizon {args.regression_horizon}: a frame count > 0 that weighs streamed rollouts' "
            f"regression by depth (0: off); it needs streaming (--rollout-frames N)"
        )
    if args.stats_weight < 0 or (args.stats_weight and not R):
        raise UserError(
            f"--stats-weight {args.stats_weight}: a weight >= 0 on streamed rollouts' frame statistics "
            "(0: off); it needs streaming (--rollout-frames N)"
        )
    if args.hold_weight < 0 or (args.hold_weight and not R):
        raise UserError(
            f"--hold-weight {args.hold_weight}: a weight >= 0 on streamed frames made while no key is held "
            "(0: off); it needs streaming (--rollout-frames N)"
        )
    if args.hold_weight and args.data:
        raise UserError(
            f"--hold-weight {args.hold_weight} with --data: it holds a view still while no key is held, as "
            "the built-in game does; a recorded game moves on its own (pass --hold-weight 0)"
        )
    if args.context_noise is None:
        args.context_noise = cfg.context_noise
    if not 0.0 <= args.context_noise < 1.0:
        raise UserError(f"--context-noise must be in [0, 1), got {args.context_noise}")
    return cfg.replace(context_noise=args.context_noise)


def _adam(model, lr: float, device):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.0, 0.999), weight_decay=0.01,
                             fused=device.type == "cuda")  # fmt: skip


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) the student; writes self_forcing.pt, the loss plot and self_forcing.json."""
    common.check_positive(steps=args.steps, batch=args.batch, lr=args.lr, minutes=args.minutes,
                          critic_steps=args.critic_steps, frames=args.frames)  # fmt: skip
    if args.context not in CONTEXTS:
        raise UserError(f"--context {args.context!r}: pick one of {', '.join(CONTEXTS)}")
    device = common.resolve_device(args.device)
    out = Path(args.out)
    state_path = out / STATE_FILE
    torch.manual_seed(args.seed)
    state = common.open_state(state_path, "self_forcing", args, HPARAMS)
    if state is None and not args.teacher:
        raise UserError(
            "--teacher is required: a teacher.pt train state or a checkpoint (name or .safetensors)"
        )

    cfg, teacher, ae, teacher_info = load_teacher(state if state is not None else args.teacher, device)
    if args.steps_per_frame:
        cfg = cfg.replace(steps=args.steps_per_frame)
    cfg = _settings(args, cfg, device, state)
    student, critic = copy.deepcopy(teacher), copy.deepcopy(teacher)
    budget_before = (state.get("metrics") or {}).get("budget") if state is not None else None
    starts = state.get("start_frames") if state is not None else None  # what the exported student starts from
    if starts is None and args.data is not None:
        starts = {"frames": datasets.start_frames(Dataset(args.data), cfg.image_hw[0])}
    if state is None and args.init:  # continue a student (the critic still starts from the teacher)
        weights, budget_before = load_student(args.init, cfg)
        common.load_grown(student, weights, f"--init {args.init}")  # a stacked teacher grows the student too
    out.mkdir(parents=True, exist_ok=True)  # after every input was read: a failed start leaves no folder
    live = resume.MetricsLog(out)
    for m in (student, critic):
        m.requires_grad_(True).train()
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    opt_g, opt_c = _adam(student, args.lr, device), _adam(critic, args.critic_lr, device)
    step, history = 0, {k: [] for k in ("step", "dmd", "dmd_grad", "critic", "regression", "stats", "hold")}
    if state is not None:
        student.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_c.load_state_dict(state["opt_c"])
        step, history = state["step"], state["history"]
        for k in ("stats", "hold"):  # a state from before --stats-weight / --hold-weight
            history.setdefault(k, [])
        log.info("resumed %s at step %d", state_path, step)

    B, Fc, S, R = args.batch, args.context_frames, cfg.steps, args.rollout_frames
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    schedule = schedule_for(cfg, S, device)
    seed = args.seed * 1_000 + step
    source = args.source or ("store" if R else "live")
    data = open_data(args, cfg, ae, device, clip=clip_frames(args, cfg), source=source, seed=seed,
                     batch=B if R else B * (args.critic_steps + 1))  # fmt: skip
    if R:
        merged = cuda and not args.separate_critic_rollouts
        rollouts = StreamedRollouts(args, cfg, data, schedule, device, dtype, seed, merged=merged)
        log.info(
            "self-forcing (streamed) %s: %d-step student, rollouts of %d frames (%.1f windows) in chunks of "
            "%d, %d real context frames, %.0f%% idle (of %d frames), batch %d, %d critic steps per generator "
            "step, data %s, device %s", cfg.name, S, R, R / cfg.window, args.chunk, Fc, 100 * args.idle_fraction,
            args.idle_rollout_frames, B,
            args.critic_steps, args.data or source, device,
        )  # fmt: skip
    else:
        rollouts = FreshRollouts(args, cfg, data, schedule, device, dtype)
        if args.frames + Fc <= cfg.window:
            log.warning("context + rollout frames %d <= window %d: the window never slides", args.frames + Fc,
                        cfg.window)  # fmt: skip
        log.info(
            "self-forcing (%s context) %s: %d-step student, %d context + %d rollout frames, batch %d, "
            "%d critic steps per generator step, data %s, device %s",
            args.context, cfg.name, S, Fc, args.frames, B, args.critic_steps, args.data or source, device,
        )  # fmt: skip

    def run_metrics(interrupted: bool | None) -> dict:
        """This run's figures so far (interrupted None: a state saved mid-run), with the budget of all runs."""
        seconds = time.monotonic() - t_start
        last = {k: float(f"{v[-1]:.4g}") for k, v in history.items() if k != "step" and v}
        metrics = {
            "preset": cfg.name,
            "context": args.context,
            "steps_per_frame": S,
            "generator_steps": step,
            "critic_steps_per_generator_step": args.critic_steps,
            "batch": B,
            "context_frames": Fc,
            "rollout_frames": R or args.frames,
            "streamed": bool(R),
            "chunk": args.chunk if R else None,
            "idle_fraction": args.idle_fraction if R else None,
            "idle_dmd": args.idle_dmd if R else None,
            "idle_rollout_frames": args.idle_rollout_frames if R else None,
            "mean_rollout_depth": round(depth_sum / max(step - start_step, 1), 1),
            "context_noise": cfg.context_noise,
            "data": {
                "path": args.data,
                **data.describe(),
                **(rollouts.describe() if R else {}),
                **({"manifest": dataset_manifest(args.data)} if args.data else {}),
            },
            "lr": args.lr,
            "critic_lr": args.critic_lr,
            "regression_weight": args.regression_weight,
            "regression_horizon": args.regression_horizon,
            "stats_weight": args.stats_weight if R else None,
            "hold_weight": args.hold_weight if R else None,
            "guidance": args.guidance,
            "final": last,
            "train_seconds_this_run": round(seconds, 1),
            "steps_per_second": round((step - start_step) / max(seconds, 1e-6), 3),
            "device": str(device),
            "interrupted": bool(interrupted),
            "in_progress": interrupted is None,
            "budget_before": budget_before,
            "budget": resume.add_run(
                budget_before,
                steps=step - start_step,
                clips=(step - start_step) * B,
                seconds=seconds,
                device=device,
            ),
        }
        return metrics

    budget = common.Budget(args.steps, args.minutes)
    bar = common.progress(args.steps, step, args.no_progress, f"self-forcing ({args.context})")
    t_start, start_step, figs, depth_sum = time.monotonic(), step, {}, 0.0
    stop = resume.StopRequest().install()
    try:
        while not stop.requested and not budget.done(step):
            # critic: fake score on the student's own rollouts (one batched rollout, detached)
            with amp:
                fake = rollouts.critic(student)
            for c in range(args.critic_steps):
                sl = slice(c * B, (c + 1) * B)
                t = sample_levels(fake.keys[sl].shape[:2], args.t_min, args.t_max, device)
                with amp:
                    lc = critic_loss(critic, fake.x0[sl], fake.ctx_z[sl], fake.ctx_keys[sl], fake.keys[sl], t,
                                     context_noise=cfg.context_noise)  # fmt: skip
                opt_c.zero_grad(set_to_none=True)
                lc.backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), args.grad_clip)
                opt_c.step()
            # generator: its rollout with gradient through each frame's exit step (the newest chunk only)
            with amp:
                gen = rollouts.generator(student)
                t = sample_levels(gen.keys.shape[:2], args.t_min, args.t_max, device)
                ld, figs = dmd_loss(gen.x0, gen.ctx_z, gen.ctx_keys, gen.keys, teacher, critic, t,
                                    context_noise=cfg.context_noise, guidance=args.guidance,
                                    row_weight=gen.dmd_weight(args.idle_dmd))  # fmt: skip
                lr_ = gen.regression(args.regression_horizon)
                loss = ld + args.regression_weight * lr_ if args.regression_weight else ld
                ls_ = gen.stats() if args.stats_weight else None
                if ls_ is not None:
                    loss = loss + args.stats_weight * ls_
                lh = gen.hold() if args.hold_weight else None
                if lh is not None:
                    loss = loss + args.hold_weight * lh
            depth = gen.depth.float().mean().item()  # host counters: no device sync
            depth_sum += depth
            opt_g.zero_grad(set_to_none=True)
            critic.requires_grad_(False)  # the generator step must not touch the critic's grads
            loss.backward()
            critic.requires_grad_(True)
            gnorm = torch.nn.utils.clip_grad_norm_(student.parameters(), args.grad_clip)
            opt_g.step()
            common.ema_update(ema, student, min(args.ema_decay, (1 + step) / (10 + step)))
            data.after_step(step)
            step += 1
            bar.update(1)
            if step % 5 == 0 or step == 1:
                history["step"].append(step)
                history["dmd"].append(ld.item())
                history["dmd_grad"].append(figs["dmd_grad_norm"])
                history["critic"].append(lc.item())
                history["regression"].append(lr_.item())
                if ls_ is not None:
                    history["stats"].append(ls_.item())
                if lh is not None:
                    history["hold"].append(lh.item())
                bar.set_postfix(dmd=f"{ld.item():.3e}", critic=f"{lc.item():.4f}", reg=f"{lr_.item():.4f}")
                live.write(step=step, dmd=history["dmd"][-1], critic=history["critic"][-1], lr=args.lr,
                           regression=history["regression"][-1], grad_norm=round(gnorm.item(), 4),
                           rollout_depth=round(depth, 1), **({} if ls_ is None else {"stats": history["stats"][-1]}),
                           **({} if lh is None else {"hold": history["hold"][-1]}),
                           clips_per_second=round((step - start_step) * B / max(time.monotonic() - t_start, 1e-6), 2))  # fmt: skip
            if step % args.log_every == 0:
                log.info("step %d dmd %.3e critic %.4f regression %.4f%s%s gnorm %.3f %s",
                         step, ld.item(), lc.item(), lr_.item(), "" if ls_ is None else f" stats {ls_.item():.4f}",
                         "" if lh is None else f" hold {lh.item():.4f}", gnorm.item(), figs)  # fmt: skip
            if step % args.ckpt_every == 0:
                save_state(state_path, args, cfg, student, ema, critic, opt_g, opt_c, ae, teacher, teacher_info,
                           step, history, run_metrics(None), starts)  # fmt: skip
    except KeyboardInterrupt:  # a second Ctrl-C: keep what was trained all the same
        stop.requested = True
    finally:
        stop.restore()  # also when the loop raised: the process's own Ctrl-C comes back
    interrupted = stop.finish(step)
    bar.close()
    seconds = time.monotonic() - t_start
    metrics = run_metrics(interrupted)
    save_state(state_path, args, cfg, student, ema, critic, opt_g, opt_c, ae, teacher, teacher_info, step,
               history, metrics, starts)  # fmt: skip
    common.save_loss_plot(history, out / "self_forcing_loss.png",
                          f"student ({cfg.name}, {args.context} context): DMD / critic / regression")  # fmt: skip
    common.write_json(metrics, out / "self_forcing.json")
    log.info("self-forcing: %d generator steps in %.0f s", step, seconds)
    return metrics


def main(args: argparse.Namespace) -> int:
    from worldsim.train.sf_state import export_student

    if train(args).get("interrupted"):
        return 130  # the state is saved; the shell still learns the run did not finish
    if args.export:
        export_student(Path(args.out) / STATE_FILE, args.export)
    return 0
