"""The KV cache: a fixed ring buffer per layer, allocated once (docs/design.md §6).

Layout per layer: K and V `[B, H, (sinks + window) * N, Dh]`. The first `sinks * N` rows hold the
learned sink tokens; frame n of a game lives in ring slot `n % window`, i.e. rows
`(sinks + n % window) * N ...`. Writes are index writes (never torch.cat, never a shift-copy).
After the ring, one block of staging rows serves the folded protocol (`begin(staged=, pending=)`): the
block being denoised lives there, and the previous, finished block enters its ring slots in the first
denoising pass of the next one (one forward over both).
K is stored fully rotated: the temporal RoPE is periodic in the window (see rope.py), so a frame's
rotation depends on `n % window` only, positions stay bounded forever and nothing is re-rotated at read.

Frame counters (`length`, `slot_frame`) are device tensors: nothing on the per-frame path reads them
on the host, and filling and steady state have the same static shapes (a valid-slot mask covers the
filling phase), so one CUDA graph can serve both. `reset(rows)` restarts some games of the batch
without touching the others.
With frame stacking (`cfg.prev_frame`) the cache also keeps, per game, the latents and level of the last
finished frame (what the next block's first frame stacks): `last` is recorded by the pass that carries
a finished frame (the write pass, or folded the pending one) and becomes `prev` at `advance`; a folded
staged pass reads `last` (the pending block, not yet advanced past), every other pass `prev`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldsim.model.attention import additive, expand_frame_mask, frame_mask
from worldsim.model.config import ModelConfig

# what a game with no previous frame stacks (prev_z, prev_t, last_z, last_t): zeros at level 1
_EMPTY = (0.0, 1.0, 0.0, 1.0)


@dataclass
class CacheView:
    """What one cached forward pass needs, computed once per pass and shared by all layers."""

    rows: torch.Tensor | None  # long [R] batch rows of the cache, None = all B (no gather copies)
    write_index: torch.Tensor  # long [R, Fb*N] cache rows (token positions) of the current block
    mask: torch.Tensor  # [R, 1, Fb*N, (S+W)*N] additive read mask (0 visible, -inf not)
    frames: torch.Tensor  # long [R, Fb] absolute frame indices of the current block
    valid_tokens: torch.Tensor  # long [R] the valid prefix length (for prefix-only backends)
    local_mask: torch.Tensor | None = None  # like `mask`, for local layers (cfg.local_window > 0)
    staged: bool = False  # folded protocol: the current block's K/V sit in the staging rows (read too)
    frame_mask: torch.Tensor | None = None  # bool [R, Fq, S+W(+Fb)] frame-level `mask` (ring kernel)
    local_frame_mask: torch.Tensor | None = None  # bool, frame-level `local_mask`


class KVCache:
    """Ring-buffer KV cache for `batch_size` games of a DiT built from `cfg`."""

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if batch_size < 1:
            raise ValueError(f"KVCache batch_size must be >= 1, got {batch_size}")
        self.cfg = cfg
        self.batch_size = batch_size
        S, W, N = cfg.sinks, cfg.window, cfg.tokens_per_frame
        self.slots = S + W  # frames the buffer holds
        Fb = cfg.block_frames
        # one extra block of "staging" rows after the ring: the folded protocol (begin(staged=True)) keeps
        # the block being denoised there, because its ring slots still hold frames the pending block sees
        shape = (cfg.depth, batch_size, cfg.heads, (self.slots + Fb) * N, cfg.head_dim)
        self._k = torch.zeros(shape, device=device, dtype=dtype)  # [depth, B, H, (S+W+Fb)*N, Dh]
        self._v = torch.zeros(shape, device=device, dtype=dtype)
        self.k = self._k[..., : self.slots * N, :]  # [depth, B, H, (S+W)*N, Dh] views: sinks + ring
        self.v = self._v[..., : self.slots * N, :]
        self.slot_frame = torch.full((batch_size, W), -1, device=device, dtype=torch.long)  # [B, W]
        self.length = torch.zeros(batch_size, device=device, dtype=torch.long)  # [B] next frame index
        self._block = torch.arange(cfg.block_frames, device=device)  # [Fb]
        self._block2 = torch.arange(2 * cfg.block_frames, device=device)  # [2Fb] pending + new block
        self._stage_index = (self.slots * N + torch.arange(Fb * N, device=device))[None]  # [1, Fb*N]
        self._tokens = torch.arange(N, device=device)  # [N]
        self._all_rows = torch.arange(batch_size, device=device)  # [B]
        self._stack: list[torch.Tensor] = []
        if cfg.prev_frame:  # [B,C,h,w] latents and [B] levels: prev, then last (see the module docstring)
            z = (batch_size, cfg.latent_channels, *cfg.latent_hw)
            self.prev_z, self.last_z = (torch.zeros(z, device=device, dtype=dtype) for _ in range(2))
            self.prev_t, self.last_t = (torch.ones(batch_size, device=device, dtype=dtype) for _ in range(2))
            self._stack = [self.prev_z, self.prev_t, self.last_z, self.last_t]

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache owns (for checks that nothing is reallocated)."""
        return [self._k, self._v, self.slot_frame, self.length, *self._stack]

    # lifecycle --------------------------------------------------------------------------------
    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Empty the given batch rows (all when None): their next frame is frame 0."""
        if rows is None:
            self.slot_frame.fill_(-1)
            self.length.zero_()
            self._k.zero_()
            self._v.zero_()
            for buf, empty in zip(self._stack, _EMPTY):
                buf.fill_(empty)
            return
        rows = rows.to(self.device)
        self.slot_frame.index_fill_(0, rows, -1)
        self.length.index_fill_(0, rows, 0)
        self._k.index_fill_(1, rows, 0.0)
        self._v.index_fill_(1, rows, 0.0)
        for buf, empty in zip(self._stack, _EMPTY):
            buf.index_fill_(0, rows, empty)

    def advance(self, rows: torch.Tensor | None = None, *, active: torch.Tensor | None = None) -> None:
        """The current block is final (its write pass is done, or, folded, it is pending): move on.
        `active` (`[B]` 0/1, with rows=None): only those rows move (static shapes for the engine's graph)."""
        Fb = self.cfg.block_frames
        if active is not None:
            self.length.add_(active * Fb)
        elif rows is None:
            self.length.add_(Fb)
        else:
            self.length.index_add_(0, rows, torch.full_like(rows, Fb))
        if not self._stack:
            return
        if active is not None:  # the moving rows' last finished frame becomes their previous one
            on = active.bool()
            self.prev_z.copy_(torch.where(on[:, None, None, None], self.last_z, self.prev_z))
            self.prev_t.copy_(torch.where(on, self.last_t, self.prev_t))
        elif rows is None:
            self.prev_z.copy_(self.last_z)
            self.prev_t.copy_(self.last_t)
        else:
            self.prev_z.index_copy_(0, rows, self.last_z.index_select(0, rows))
            self.prev_t.index_copy_(0, rows, self.last_t.index_select(0, rows))

    # frame stacking (cfg.prev_frame) ------------------------------------------------------------
    def previous(self, view: CacheView, pending: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame before the pass's first query frame: latents `[R,C,h,w]` and level `[R]`."""
        z, t = (self.last_z, self.last_t) if view.staged and not pending else (self.prev_z, self.prev_t)
        if view.rows is None:
            return z, t
        return z.index_select(0, view.rows), t.index_select(0, view.rows)

    def record_last(self, view: CacheView, z: torch.Tensor, t: torch.Tensor) -> None:
        """The pass's last finished frame `z [R,C,h,w]` at level `t [R]` (the next block's previous)."""
        if view.rows is None:
            self.last_z.copy_(z)
            self.last_t.copy_(t)
        else:
            self.last_z.index_copy_(0, view.rows, z.to(self.dtype))
            self.last_t.index_copy_(0, view.rows, t.to(self.dtype))

    # one forward pass -------------------------------------------------------------------------
    def begin(
        self, rows: torch.Tensor | None = None, *, staged: bool = False, pending: bool = False
    ) -> CacheView:
        """Claim the ring slots of the current block and build the read mask.

        Idempotent within a block: every denoising pass and the final write pass call it.
        Folded protocol (the finished block's write joins the next block's first pass):
          * `staged=True`: the current block's K/V go to the staging rows, not the ring (the ring holds
            finished blocks only, so its slots still hold the frames `window` back);
          * `pending=True` (implies staged): the queries are the PENDING block (the finished previous
            one: written into its ring slots here, which is its cache write) then the current block.
        Keys = sinks + ring (+ staging); the mask is the same rule, so every frame sees exactly what it
        sees unfolded. `length` is the current block's first frame in both protocols.
        """
        cfg = self.cfg
        S, W, N, Fb = cfg.sinks, cfg.window, cfg.tokens_per_frame, cfg.block_frames
        staged = staged or pending
        length = self.length if rows is None else self.length.index_select(0, rows)  # [R]
        if pending:  # [R, 2Fb] absolute frame indices: the pending block, then the current one
            # (clamped: a row never started, length 0, still gives every query a visible key: no NaN)
            frames = (length - Fb).clamp_min(0)[:, None] + self._block2
        else:  # [R, Fb] the current block
            frames = length[:, None] + self._block
        R = frames.shape[0]
        slot_frame = self.slot_frame if rows is None else self.slot_frame.index_select(0, rows)  # [R, W]
        write_index = self._stage_index.expand(R, -1)  # [R, Fb*N] staging rows
        if pending or not staged:  # a block enters the ring: claim its slots
            slot = frames[:, :Fb] % W  # [R, Fb]
            if rows is None:
                self.slot_frame.scatter_(1, slot, frames[:, :Fb])
            else:
                self.slot_frame[rows[:, None], slot] = frames[:, :Fb]
                slot_frame = self.slot_frame.index_select(0, rows)
            ring_index = ((S + slot)[:, :, None] * N + self._tokens).flatten(1)  # [R, Fb*N]
            write_index = torch.cat([ring_index, write_index], 1) if pending else ring_index  # [R, Fq*N]
        key_frames = slot_frame  # [R, W] frame held by each key slot after the sinks
        if staged:
            key_frames = torch.cat([slot_frame, frames[:, -Fb:]], 1)  # [R, W+Fb] ring + staging
        fmask = frame_mask(frames, key_frames, sinks=S, block_frames=Fb, window=W)  # [R, Fq, S+W(+Fb)]
        mask = additive(expand_frame_mask(fmask, N)[:, None], self.dtype)  # [R, 1, Fq*N, (S+W(+Fb))*N]
        valid_tokens = (S + (slot_frame >= 0).sum(1)) * N  # [R] (unstaged passes only)
        local_mask = lmask = None
        if cfg.local_window:  # sparse: the same rule with the local window (attention.frame_masks)
            lmask = frame_mask(frames, key_frames, sinks=S, block_frames=Fb, window=cfg.local_window)
            local_mask = additive(expand_frame_mask(lmask, N)[:, None], self.dtype)  # like `mask`
        return CacheView(rows, write_index, mask, frames, valid_tokens, local_mask, staged, fmask, lmask)

    def write(self, layer: int, view: CacheView, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the block's K/V `[R, H, Fb*N, Dh]` (K fully rotated) into its ring slots."""
        rows = self._all_rows if view.rows is None else view.rows
        idx = (rows[:, None], slice(None), view.write_index)  # -> [R, Fq*N, H, Dh] positions
        self._k[layer][idx] = k.transpose(1, 2).to(self.dtype)
        self._v[layer][idx] = v.transpose(1, 2).to(self.dtype)

    def write_sinks(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the layer's learned sink K/V `[H, S*N, Dh]` for every game (current weights)."""
        n = k.shape[1]
        self.k[layer][:, :, :n].copy_(k.to(self.dtype).expand(self.batch_size, -1, -1, -1))
        self.v[layer][:, :, :n].copy_(v.to(self.dtype).expand(self.batch_size, -1, -1, -1))

    def with_grad(
        self,
        view: CacheView,
        kc: torch.Tensor,
        vc: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        sinks: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Out-of-place copies of the read K/V `[R, H, (S+W)*N, Dh]` whose block rows are `k`, `v`
        `[R, H, Fb*N, Dh]` (and sink rows `sinks`) with their autograd history (for training)."""
        R = kc.shape[0]
        idx = (torch.arange(R, device=kc.device)[:, None], view.write_index)  # on [R, L, H, Dh]
        kc = kc.transpose(1, 2).index_put(idx, k.transpose(1, 2).to(kc.dtype)).transpose(1, 2)
        vc = vc.transpose(1, 2).index_put(idx, v.transpose(1, 2).to(vc.dtype)).transpose(1, 2)
        if sinks is not None:
            n = sinks[0].shape[1]
            kc = torch.cat([sinks[0].to(kc.dtype).expand(R, -1, -1, -1), kc[:, :, n:]], dim=2)
            vc = torch.cat([sinks[1].to(vc.dtype).expand(R, -1, -1, -1), vc[:, :, n:]], dim=2)
        return kc, vc

    def read(self, layer: int, view: CacheView) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V `[R, H, (S+W)*N, Dh]` of the layer (views when all rows, gathered copies otherwise);
        `[R, H, (S+W+Fb)*N, Dh]` with the staging rows for a staged (folded protocol) pass."""
        k, v = (self._k[layer], self._v[layer]) if view.staged else (self.k[layer], self.v[layer])
        if view.rows is None:
            return k, v
        return k.index_select(0, view.rows), v.index_select(0, view.rows)
