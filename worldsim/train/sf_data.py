"""What a self-forcing iteration trains on: the real latents (the game through the latent store, or a
dataset folder with `--data`) and the student's rollouts on their keys, fresh per iteration or streamed.

Both kinds give one `Chunk` of critic fakes (B x critic-steps rows, no gradient) and one of generator
frames (B rows, gradient through each frame's exit pass), each with its context, keys and the true latents
on the same keys (the regression target).
  * `FreshRollouts` (`--rollout-frames 0`, and the baselines `--context true/diffusion-forced`): every
    iteration draws new real clips of context + F frames and rolls out F frames from their context;
  * `StreamedRollouts` (the default for `--context self`): rows continue their rollouts across iterations
    (streaming.py), `--chunk` frames each, for `--rollout-frames` frames before they restart.
Shapes: B batch, Fc context frames, F frames, C h w latent, K keys.
"""

from __future__ import annotations

import argparse
import logging

import torch

from worldsim.data.dataset import Dataset
from worldsim.errors import UserError
from worldsim.model.config import ModelConfig
from worldsim.model.kvcache import KVCache
from worldsim.train.rollout import rollout
from worldsim.train.store import LatentBatches, store_spec
from worldsim.train.streaming import Chunk, Streams, Windows, history_frames

log = logging.getLogger(__name__)


def _exits(frames: int, steps: int) -> list[int]:
    return torch.randint(0, steps, (frames,)).tolist()  # host ints, one exit step per frame


def open_data(args: argparse.Namespace, cfg: ModelConfig, ae, device: torch.device, *, clip: int, batch: int,
              source: str, seed: int) -> LatentBatches:  # fmt: skip
    """Batches of `batch` real windows of `clip` frames (latents and keys) from the game or `--data`."""
    if args.data is not None:
        ds = Dataset(args.data)
        if tuple(ds.key_names) != tuple(cfg.key_names):
            raise UserError(
                f"--data {args.data}: its keys {ds.key_names} are not the teacher's {list(cfg.key_names)}; "
                "pass a teacher trained on this dataset"
            )
        if ds.frames < clip:
            fix = (
                f"lower --rollout-frames to <= {ds.frames - (clip - args.rollout_frames)}"
                if args.rollout_frames
                else f"lower --frames to <= {ds.frames - args.context_frames}"
            )
            raise UserError(
                f"--data {args.data}: its clips have {ds.frames} frames, a rollout needs {clip} (context "
                f"and rollout); {fix}, or collect longer clips (`worldsim collect --frames`)"
            )
    spec = store_spec(args, device, clip) if source == "store" else None
    return LatentBatches(source, ae=ae, batch=batch, frames=clip, num_keys=cfg.num_keys, device=device,
                         seed=seed, spec=spec, data=args.data)  # fmt: skip


def dataset_manifest(folder) -> dict:
    """The dataset's own description (its meta.json without the shard list), for the metrics and card."""
    return {k: v for k, v in Dataset(folder).meta.items() if k != "shards"}


class FreshRollouts:
    """Every iteration: new real clips, rolled out from their first Fc frames (one batched rollout for the
    critic's fakes, one with gradient for the generator)."""

    def __init__(self, args, cfg: ModelConfig, data: LatentBatches, schedule, device, dtype) -> None:
        self.args, self.cfg, self.data, self.schedule, self.device = args, cfg, data, schedule, device
        B, cs = args.batch, args.critic_steps
        self.cache_c = KVCache(cfg, B * cs, device=device, dtype=dtype)  # allocated once
        self.cache_g = KVCache(cfg, B, device=device, dtype=dtype)
        self._next: tuple[torch.Tensor, ...] | None = None

    def _roll(self, model, cache, z, keys, grad: bool) -> Chunk:
        a, Fc = self.args, self.args.context_frames
        n, F = z.shape[0], z.shape[1] - Fc
        ctx_z, ctx_keys, k, true_z = z[:, :Fc], keys[:, :Fc], keys[:, Fc:], z[:, Fc:]
        noise = torch.randn(true_z.shape, device=self.device)

        def level_fn(f: int) -> torch.Tensor:  # the diffusion-forced baseline's context levels
            return torch.rand(n, 1, device=self.device) * a.context_max

        x0 = rollout(model, cache, ctx_z, ctx_keys, k, noise, self.schedule, context_noise=self.cfg.context_noise,
                     exit_steps=_exits(F, self.cfg.steps), grad=grad, context=a.context, true_z=true_z,
                     level_fn=level_fn)  # fmt: skip
        return Chunk(ctx_z, ctx_keys, k, x0, true_z, torch.zeros(n, dtype=torch.long))

    def critic(self, model) -> Chunk:
        z, keys = self.data.next()  # [B * (critic_steps + 1), Fc + F]
        nc = self.args.batch * self.args.critic_steps
        self._next = (z[nc:], keys[nc:])
        with torch.no_grad():
            return self._roll(model, self.cache_c, z[:nc], keys[:nc], False)

    def generator(self, model) -> Chunk:
        z, keys = self._next
        return self._roll(model, self.cache_g, z, keys, True)


class StreamedRollouts:
    """Critic and generator rows stream their rollouts (streaming.Streams).

    `merged` (the default on a GPU, unless --separate-critic-rollouts): one batch of B x (critic steps + 1) rows, advanced together with
    gradient through the exit passes, the generator's rows every (critic steps + 1)-th: at our sizes a
    GPU pass costs its launches, not its rows, so one rollout for both halves the rollout's passes (the
    critic's rows carry gradient nobody asks for: free on a GPU, 1 + critic steps times the exit passes'
    backward on a CPU, which therefore streams the two kinds of rows apart, the critic's without gradient).
    The graph of the exit passes holds every row's cached K/V: merged, 1 + critic steps times the memory.
    """

    def __init__(self, args, cfg: ModelConfig, data: LatentBatches, schedule, device, dtype, seed: int,
                 merged: bool = False) -> None:  # fmt: skip
        self.cfg, self.schedule = cfg, schedule
        self.merged = merged
        draw = Windows(data.next)
        kw = dict(rollout_frames=args.rollout_frames, chunk=args.chunk, context_frames=args.context_frames,
                  idle_fraction=args.idle_fraction, context_noise=cfg.context_noise, device=device, dtype=dtype,
                  idle_rollout_frames=args.idle_rollout_frames)  # fmt: skip
        B, cs = args.batch, args.critic_steps
        if self.merged:
            self.all = Streams(cfg, B * (cs + 1), draw, seed=seed, **kw)
            rows = torch.arange(B * (cs + 1), device=device)
            gen = rows % (cs + 1) == cs  # interleaved: the staggered depths spread over both kinds of rows
            self._fake_rows, self._gen_rows = rows[~gen], rows[gen]
            self._gen: Chunk | None = None
        else:
            self.fakes = Streams(cfg, B * cs, draw, seed=seed, **kw)
            self.gen = Streams(cfg, B, draw, seed=seed + 1, **kw)

    def _advance(self, streams: Streams, model, grad: bool) -> Chunk:
        return streams.advance(model, self.schedule, exit_steps=_exits(streams.F, self.cfg.steps), grad=grad)

    def critic(self, model) -> Chunk:
        if self.merged:
            both = self._advance(self.all, model, True)
            self._gen = both.select(self._gen_rows)
            return both.select(self._fake_rows, detach=True)
        with torch.no_grad():
            return self._advance(self.fakes, model, False)

    def generator(self, model) -> Chunk:
        if self.merged:
            gen, self._gen = self._gen, None
            return gen
        return self._advance(self.gen, model, True)

    def describe(self) -> dict:
        s = self.all if self.merged else self.gen
        return {"rollouts": s.rollouts, "idle_rollouts": s.idle_rollouts, "history_frames": s.Hc,
                "merged": self.merged}  # fmt: skip


def clip_frames(args: argparse.Namespace, cfg: ModelConfig) -> int:
    """Frames of one real window: context + rollout (fresh), history + rollout (streamed)."""
    if args.rollout_frames:
        return history_frames(cfg, args.context_frames) + args.rollout_frames
    return args.context_frames + args.frames
