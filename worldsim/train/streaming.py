"""Streamed self-forcing rollouts (docs/design.md §7.3): every row of a batch continues its own rollout
across training iterations, one chunk at a time, for `rollout_frames` frames before it restarts from real
context.

Each row holds a KV cache row (its generated frames as detached K/V, as inference holds them; the
training rollout writes every frame with its own pass, so no pending block waits between iterations),
the last `history` frames before its next chunk (what the DMD scores see as context: a window of real
frames at a restart, of which the student's cache gets the last `context_frames` as inference starts;
generated frames after) and its plan: the keys of its whole rollout and the true latents the real game
(or a dataset) gives for them, so the regression term is there at every depth. An iteration generates
the next `chunk` frames of every row with `continue_rollout`, gradient only through them.
The chunk defaults to half a window: the scores see history + chunk = 1.5 windows, the clip length the
fresh rollouts always scored, while the rollout generates a third of the frames per step; a smaller
chunk buys more steps per second on a GPU (the passes are launch-bound) at fewer frames scored per step.
Rows restart staggered (the first rollout of row r is cut short by r/rows of its length), so a batch holds
rollouts at all depths. A fraction of the rollouts is idle: no key held for the whole rollout, the truth
the last context frame held still (the game's view does not change while no key is held), and it may run
longer than the moving ones (`idle_rollout_frames`: the hold is trained at the depths a player stands still
for, where the view has drifted furthest); the rest
follow the explorer's mix of the windows drawn (which has idle stretches of its own). The streams are
not part of a train state: a resumed run begins them afresh (staggered again).
Shapes: B rows, Hc history frames, R rollout frames, F chunk frames, C h w latent, K keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from worldsim.model.config import ModelConfig
from worldsim.model.kvcache import KVCache
from worldsim.train.rollout import continue_rollout, prime_context

# `draw(n)` -> n windows of real latents `[n, Hc+R, C, h, w]` (fp32) and keys `[n, Hc+R, K]` (bool)
Draw = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Chunk:
    """What one iteration of the streams gives the losses."""

    ctx_z: torch.Tensor  # [B,Hc,C,h,w] the frames before the chunk (detached)
    ctx_keys: torch.Tensor  # [B,Hc,K]
    keys: torch.Tensor  # [B,F,K] the chunk's keys
    x0: torch.Tensor  # [B,F,C,h,w] the generated chunk (gradient through its exit passes when asked)
    true_z: torch.Tensor  # [B,F,C,h,w] the true latents on the same keys
    depth: torch.Tensor  # [B] frames each row had generated before this chunk (host)
    idle: torch.Tensor | None = None  # [B] bool (host): the row's rollout holds no key (None: no row)

    def select(self, rows: torch.Tensor, *, detach: bool = False) -> Chunk:
        """The chunk of some rows (long, on the chunk's device); `detach`: their frames without gradient."""
        x0 = self.x0.index_select(0, rows)
        pick = (self.ctx_z, self.ctx_keys, self.keys)
        idle = None if self.idle is None else self.idle[rows.cpu()]
        return Chunk(*(t.index_select(0, rows) for t in pick), x0.detach() if detach else x0,
                     self.true_z.index_select(0, rows), self.depth[rows.cpu()], idle)  # fmt: skip

    def dmd_weight(self, idle: float) -> torch.Tensor | None:
        """Per-row weight `[B]` of the DMD term: `idle` on idle rows, 1 elsewhere (None: all 1)."""
        if self.idle is None or idle == 1.0 or not bool(self.idle.any()):
            return None
        return torch.where(self.idle, torch.tensor(float(idle)), torch.tensor(1.0))

    def stats(self) -> torch.Tensor:
        """Squared error of each generated frame's per-channel latent mean and spatial std to the true
        frame's, at every depth, averaged over rows, frames and channels: a few numbers a frame, so a deep
        frame that has lost its place is pulled toward the true view's brightness and contrast without the
        MSE's pull toward a blurred mean of two views (docs/design.md §7.3)."""
        x, z = self.x0.float(), self.true_z.float()  # [B,F,C,h,w]
        dm = x.mean((-2, -1)) - z.mean((-2, -1))
        ds = x.std((-2, -1)) - z.std((-2, -1))  # torch's std backward stays finite on a flat channel
        return (dm.pow(2) + ds.pow(2)).mean()

    def hold(self) -> torch.Tensor:
        """Squared error of each frame made while no key is held to the frame before it (the chunk's own
        previous frame, detached, or the last history frame), at every depth of every rollout, moving or
        idle, averaged over all the chunk's frames: in the built-in game a view does not change while no
        key is held, wherever the student believes it is, so this needs no true frame (deep in a moving
        rollout, where the regression has faded and DMD alone would carry the teacher's drift into a still
        view; docs/design.md §7.3)."""
        x = self.x0.float()  # [B,F,C,h,w]
        prev = torch.cat([self.ctx_z[:, -1:].float(), x[:, :-1].detach()], 1)
        err = (x - prev).pow(2).flatten(2).mean(-1)  # [B,F]
        still = ~self.keys.any(-1)  # [B,F] no key held: the frame must equal the one before
        return (err * still.to(err.dtype)).mean()

    def regression(self, horizon: float = 0.0) -> torch.Tensor:
        """MSE of the chunk's frames to the true latents. `horizon` H > 0 weighs a frame generated d frames
        into a moving rollout by exp(-d / H): deep in a rollout the student's view has drifted from the
        true one, and the MSE to it pulls the frame to a blurred mean of the two. Idle rows keep weight 1
        (the truth is the still view at any depth). The mean over all frames: a smaller weight is less loss."""
        err = (self.x0.float() - self.true_z.float()).pow(2).flatten(2).mean(-1)  # [B,F]
        if horizon <= 0:
            return err.mean()
        B, F = err.shape
        d = self.depth.to(torch.float32)[:, None] + torch.arange(F, dtype=torch.float32)  # [B,F] host
        w = torch.exp(-d / horizon)
        if self.idle is not None:
            w = torch.where(self.idle[:, None], torch.ones_like(w), w)
        return (err * w.to(err.device)).mean()


def history_frames(cfg: ModelConfig, context_frames: int) -> int:
    """Frames of context before a chunk: a full window for its first frame (window - 1), at least the
    real context a rollout starts from."""
    return max(context_frames, cfg.window - 1)


class Windows:
    """Single windows out of a batch source (`next()` -> latents `[b, L, ...]`, keys `[b, L, K]`), any
    number at a time: restarting rows take as many as they need."""

    def __init__(self, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]):
        self.next_batch = next_batch
        self._z: torch.Tensor | None = None
        self._keys: torch.Tensor | None = None

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        zs, ks, have = [], [], 0
        while have < n:
            if self._z is None or self._z.shape[0] == 0:
                self._z, self._keys = self.next_batch()
            take = min(n - have, self._z.shape[0])
            zs.append(self._z[:take])
            ks.append(self._keys[:take])
            self._z, self._keys = self._z[take:], self._keys[take:]
            have += take
        return torch.cat(zs), torch.cat(ks)


class Streams:
    """`rows` streamed rollouts of `rollout_frames` frames, advanced `chunk` frames per `advance`."""

    def __init__(
        self,
        cfg: ModelConfig,
        rows: int,
        draw: Draw,
        *,
        rollout_frames: int,
        chunk: int,
        context_frames: int,
        idle_fraction: float,
        context_noise: float,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        stagger: bool = True,
        idle_rollout_frames: int | None = None,
    ) -> None:
        if chunk < 1 or rollout_frames % chunk or chunk % cfg.block_frames:
            raise ValueError(
                f"rollout_frames {rollout_frames} must be a multiple of chunk {chunk}, itself a multiple "
                f"of block_frames {cfg.block_frames}"
            )
        self.R_idle = rollout_frames if idle_rollout_frames is None else idle_rollout_frames
        if self.R_idle < chunk or self.R_idle % chunk:
            raise ValueError(
                f"idle_rollout_frames {self.R_idle} must be a positive multiple of chunk {chunk}"
            )
        self.cfg, self.rows, self.draw, self.device = cfg, rows, draw, device
        self.R, self.F, self.Fc = rollout_frames, chunk, context_frames
        self.Hc = history_frames(cfg, context_frames)
        self.idle_fraction, self.context_noise = idle_fraction, context_noise
        self.cache = KVCache(cfg, rows, device=device, dtype=dtype)
        C, (h, w), K = cfg.latent_channels, cfg.latent_hw, cfg.num_keys
        self.hist_z = torch.zeros(rows, self.Hc, C, h, w, device=device)
        self.hist_keys = torch.zeros(rows, self.Hc, K, dtype=torch.bool, device=device)
        self.plan_z = torch.zeros(rows, self.R, C, h, w, device=device)
        self.plan_keys = torch.zeros(rows, self.R, K, dtype=torch.bool, device=device)
        # host counters (CPU tensors: reading them never waits for the device)
        self.depth = torch.zeros(rows, dtype=torch.long)  # frames generated since the row's restart
        self.left = torch.zeros(rows, dtype=torch.long)  # frames left in its rollout (0: restart next)
        self.idle = torch.zeros(rows, dtype=torch.bool)
        chunks = self.R // self.F
        # the first rollout of row r is short by (r * chunks // rows) chunks: depths spread over [0, R)
        self._first_cut = (torch.arange(rows) * chunks // rows) * self.F if stagger else torch.zeros(rows)
        self._started = False
        self._gen = torch.Generator().manual_seed(int(seed))
        self.rollouts = 0  # rollouts begun so far
        self.idle_rollouts = 0

    def restart(self, dit, rows: torch.Tensor) -> None:
        """Begin new rollouts on `rows` (long, host): real context from fresh windows, idle or not."""
        n = len(rows)
        z, keys = self.draw(n)  # [n, Hc+R, ...]
        z, keys = z.to(self.device, torch.float32), keys.to(self.device, torch.bool)
        idle = torch.rand(n, generator=self._gen) < self.idle_fraction
        hist_z, hist_keys = z[:, : self.Hc], keys[:, : self.Hc]
        plan_z, plan_keys = z[:, self.Hc :], keys[:, self.Hc :]
        on = idle.to(self.device)
        # idle: no key held for the whole rollout; the game's view stays the last context frame
        plan_keys = torch.where(on[:, None, None], False, plan_keys)
        still = hist_z[:, -1:].expand_as(plan_z)
        plan_z = torch.where(on.view(n, 1, 1, 1, 1), still, plan_z)
        dev_rows = rows.to(self.device)
        for buf, val in ((self.hist_z, hist_z), (self.hist_keys, hist_keys), (self.plan_z, plan_z),
                         (self.plan_keys, plan_keys)):  # fmt: skip
            buf.index_copy_(0, dev_rows, val)
        self.idle[rows] = idle
        self.depth[rows] = 0
        self.left[rows] = torch.where(idle, self.R_idle, self.R)
        self.rollouts += n
        self.idle_rollouts += int(idle.sum())
        prime_context(dit, self.cache, hist_z[:, -self.Fc :], hist_keys[:, -self.Fc :], rows=dev_rows,
                      context_noise=self.context_noise, generator=None)  # fmt: skip

    def advance(
        self,
        dit,
        schedule: torch.Tensor,
        *,
        exit_steps: list[int] | None = None,
        grad: bool = False,
        noise: torch.Tensor | None = None,
    ) -> Chunk:
        """The next chunk of every row (rows whose rollout ended restart first); `noise [B,F,C,h,w]`
        starts the chunk's frames (default: fresh). Gradient only through this chunk's exit passes."""
        ended = torch.nonzero(self.left <= 0).flatten()
        if len(ended):
            self.restart(dit, ended)
            if not self._started:  # the staggered start: first rollouts cut short, as if begun earlier
                self.left -= self._first_cut.long()
        self._started = True
        F = self.F
        # plan index: a moving row's depth is < R; an idle row's plan is one still frame and no key, so an
        # idle rollout longer than R reads it modulo R
        idx = (self.depth.to(self.device)[:, None] + torch.arange(F, device=self.device)) % self.R  # [B,F]
        at = torch.arange(self.rows, device=self.device)[:, None]
        keys, true_z = self.plan_keys[at, idx], self.plan_z[at, idx]  # [B,F,K], [B,F,C,h,w]
        if noise is None:
            noise = torch.randn(true_z.shape, device=self.device)
        x0 = continue_rollout(dit, self.cache, keys, noise, schedule, context_noise=self.context_noise,
                              exit_steps=exit_steps, grad=grad)  # fmt: skip
        chunk = Chunk(
            self.hist_z.clone(),
            self.hist_keys.clone(),
            keys,
            x0,
            true_z,
            self.depth.clone(),
            self.idle.clone(),
        )
        self.hist_z = torch.cat([self.hist_z, x0.detach().float()], 1)[:, -self.Hc :]
        self.hist_keys = torch.cat([self.hist_keys, keys], 1)[:, -self.Hc :]
        self.depth += F
        self.left -= F
        return chunk

    def window(self) -> int:
        """Frames one restart draws: the history before the rollout, then the rollout."""
        return self.Hc + self.R
