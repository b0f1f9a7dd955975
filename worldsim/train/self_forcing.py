"""Self-forcing distillation of the few-step student (docs/design.md §7.3): DMD on its own KV-cached rollouts.

The student starts from the teacher and rolls out autoregressively exactly as `NeuralWorld` runs
(rollout.py: the ring-buffer KVCache, the deployed window and few-step schedule), with a random exit
step per frame that keeps gradient while earlier steps and cache writes run without it. Loss: DMD with
the teacher as real score and a critic (fake score, initialised from the teacher) trained on the
student's rollouts, `--critic-steps` critic updates per generator update (dmd.py), optionally plus a
regression to the real game's latents on the same keys (`--regression-weight`). `--context true` or
`diffusion-forced` trains the same student on ground-truth history instead: the baseline.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

import torch

from worldsim.errors import UserError
from worldsim.model.kvcache import KVCache
from worldsim.sampling import schedule_for
from worldsim.train import common, resume
from worldsim.train.dmd import critic_loss, dmd_loss, sample_levels
from worldsim.train.options import CONTEXTS
from worldsim.train.options import add_self_forcing_arguments as add_arguments  # noqa: F401 (stage protocol)
from worldsim.train.rollout import rollout
from worldsim.train.sf_state import (
    HPARAMS,
    STATE_FILE,
    default_frames,
    load_student,
    load_teacher,
    save_state,
)

log = logging.getLogger(__name__)


def _batch(data, ae, Fc: int):
    """A real clip from the game -> context latents/keys, rollout keys and the true latents after it."""
    from worldsim.train.flow import encode_clips

    frames, keys = next(data)
    z = encode_clips(ae, frames)  # [B,Fc+F,C,h,w] fp32
    return z[:, :Fc], keys[:, :Fc], keys[:, Fc:], z[:, Fc:]


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
    student, critic = copy.deepcopy(teacher), copy.deepcopy(teacher)
    if state is None and args.init:  # continue a student (the critic still starts from the teacher)
        student.load_state_dict(load_student(args.init, cfg))
    out.mkdir(parents=True, exist_ok=True)  # after every input was read: a failed start leaves no folder
    live = resume.MetricsLog(out)
    for m in (student, critic):
        m.requires_grad_(True).train()
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    opt_g, opt_c = _adam(student, args.lr, device), _adam(critic, args.critic_lr, device)
    step, history = 0, {"step": [], "dmd": [], "dmd_grad": [], "critic": [], "regression": []}
    if state is not None:
        student.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_c.load_state_dict(state["opt_c"])
        step, history = state["step"], state["history"]
        log.info("resumed %s at step %d", state_path, step)

    if not args.frames:
        args.frames = default_frames(cfg)
    B, Fc, F, S = args.batch, args.context_frames, args.frames, cfg.steps
    if F + Fc <= cfg.window:
        log.warning("context + rollout frames %d <= window %d: the window never slides", F + Fc, cfg.window)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    schedule = schedule_for(cfg, S, device)
    cache_c = KVCache(cfg, B * args.critic_steps, device=device, dtype=dtype)  # allocated once
    cache_g = KVCache(cfg, B, device=device, dtype=dtype)
    rows = B * (args.critic_steps + 1)
    data = common.game_batches(batch=rows, frames=Fc + F, size=cfg.image_hw, device=device,
                               seed=args.seed * 1_000 + step)  # fmt: skip
    C, (h, w) = cfg.latent_channels, cfg.latent_hw
    log.info(
        "self-forcing (%s context) %s: %d-step student, %d context + %d rollout frames, batch %d, "
        "%d critic steps per generator step, device %s",
        args.context, cfg.name, S, Fc, F, B, args.critic_steps, device,
    )  # fmt: skip

    def roll(model, cache, ctx_z, ctx_keys, keys, true_z, grad):
        n = keys.shape[0]
        exits = torch.randint(0, S, (F,)).tolist()  # host ints, one exit step per frame
        noise = torch.randn(n, F, C, h, w, device=device)

        def level_fn(f: int) -> torch.Tensor:  # the diffusion-forced baseline's context levels
            return torch.rand(n, 1, device=device) * args.context_max

        return rollout(model, cache, ctx_z, ctx_keys, keys, noise, schedule, context_noise=cfg.context_noise,
                       exit_steps=exits, grad=grad, context=args.context, true_z=true_z,
                       level_fn=level_fn)  # fmt: skip

    budget = common.Budget(args.steps, args.minutes)
    bar = common.progress(args.steps, step, args.no_progress, f"self-forcing ({args.context})")
    t_start, start_step, figs = time.monotonic(), step, {}
    stop = resume.StopRequest().install()
    try:
        while not stop.requested and not budget.done(step):
            ctx_z, ctx_keys, keys, true_z = _batch(data, ae, Fc)
            nc = B * args.critic_steps
            # critic: fake score on the student's own rollouts (one batched rollout, no gradient)
            with amp, torch.no_grad():
                fake = roll(student, cache_c, ctx_z[:nc], ctx_keys[:nc], keys[:nc], true_z[:nc], False)
            for c in range(args.critic_steps):
                sl = slice(c * B, (c + 1) * B)
                t = sample_levels((B, F), args.t_min, args.t_max, device)
                with amp:
                    lc = critic_loss(critic, fake[sl], ctx_z[sl], ctx_keys[sl], keys[sl], t,
                                     context_noise=cfg.context_noise)  # fmt: skip
                opt_c.zero_grad(set_to_none=True)
                lc.backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), args.grad_clip)
                opt_c.step()
            # generator: its rollout with gradient through each frame's exit step
            sl = slice(nc, nc + B)
            with amp:
                x0 = roll(student, cache_g, ctx_z[sl], ctx_keys[sl], keys[sl], true_z[sl], True)
                t = sample_levels((B, F), args.t_min, args.t_max, device)
                ld, figs = dmd_loss(x0, ctx_z[sl], ctx_keys[sl], keys[sl], teacher, critic, t,
                                    context_noise=cfg.context_noise, guidance=args.guidance)  # fmt: skip
                lr_ = (x0.float() - true_z[sl].float()).pow(2).mean()
                loss = ld + args.regression_weight * lr_ if args.regression_weight else ld
            opt_g.zero_grad(set_to_none=True)
            critic.requires_grad_(False)  # the generator step must not touch the critic's grads
            loss.backward()
            critic.requires_grad_(True)
            gnorm = torch.nn.utils.clip_grad_norm_(student.parameters(), args.grad_clip)
            opt_g.step()
            common.ema_update(ema, student, min(args.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)
            if step % 5 == 0 or step == 1:
                history["step"].append(step)
                history["dmd"].append(ld.item())
                history["dmd_grad"].append(figs["dmd_grad_norm"])
                history["critic"].append(lc.item())
                history["regression"].append(lr_.item())
                bar.set_postfix(dmd=f"{ld.item():.3e}", critic=f"{lc.item():.4f}", reg=f"{lr_.item():.4f}")
                live.write(step=step, dmd=history["dmd"][-1], critic=history["critic"][-1], lr=args.lr,
                           regression=history["regression"][-1], grad_norm=round(gnorm.item(), 4),
                           clips_per_second=round((step - start_step) * B / max(time.monotonic() - t_start, 1e-6), 2))  # fmt: skip
            if step % args.log_every == 0:
                log.info("step %d dmd %.3e critic %.4f regression %.4f gnorm %.3f %s",
                         step, ld.item(), lc.item(), lr_.item(), gnorm.item(), figs)  # fmt: skip
            if step % args.ckpt_every == 0:
                save_state(state_path, args, cfg, student, ema, critic, opt_g, opt_c, ae, teacher, teacher_info,
                           step, history)  # fmt: skip
    except KeyboardInterrupt:  # a second Ctrl-C: keep what was trained all the same
        stop.requested = True
    finally:
        stop.restore()  # also when the loop raised: the process's own Ctrl-C comes back
    interrupted = stop.finish(step)
    bar.close()
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
        "rollout_frames": F,
        "lr": args.lr,
        "critic_lr": args.critic_lr,
        "regression_weight": args.regression_weight,
        "guidance": args.guidance,
        "final": last,
        "train_seconds_this_run": round(seconds, 1),
        "steps_per_second": round((step - start_step) / max(seconds, 1e-6), 3),
        "device": str(device),
        "interrupted": interrupted,
    }
    save_state(state_path, args, cfg, student, ema, critic, opt_g, opt_c, ae, teacher, teacher_info, step,
               history, metrics)  # fmt: skip
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
