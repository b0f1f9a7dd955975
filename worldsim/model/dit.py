"""The block-causal video DiT (docs/design.md §4): latents of many frames in, flow velocity out.

Pre-norm transformer blocks; adaLN-Zero modulation computed PER FRAME from
`embed(noise level t of frame f) + embed(keys at frame f)` (adaLN-single: one shared projection plus a
learned per-block table, as PixArt-alpha, which keeps the tiny/base presets near 6M/30M parameters);
a learned null-key embedding for key dropout (guidance); QK-norm; RoPE on (x, y) and on the frame index
(periodic in the window, so positions stay bounded: see rope.py);
block-causal sliding-window attention with learned, time-free sink tokens.

Two ways to run the same function:
  * `forward(x, t, keys)`: a whole clip at once (training); frame f sees the frames the rule in
    `attention.visible` allows, plus the sinks.
  * `forward_cached(x, t, keys, cache)`: one block of frames against a `KVCache` (inference). Each
    pass writes the block's K/V into its ring slots, then reads the whole buffer. Protocol per block:

        for each denoising step:  v = dit.forward_cached(x_t, t, keys, cache)
        dit.forward_cached(x0_ctx, t_ctx, keys, cache)   # the write pass (finished frame, t_ctx ~ 0)
        cache.advance()

    i.e. `steps + 1` passes per block; after it the cache holds exactly what `forward` would have
    computed for that frame at `t_ctx`, which is what makes cached generation equal the full forward.
    Folded (`staged=True` passes, the first also `pending=True`; `steps` passes per block): the write
    pass of block b joins the first denoising pass of block b+1 as one forward over both; same values.
    With grad enabled, a cached pass backpropagates into its own block's K/V and the sinks; K/V of
    earlier frames read from the cache are constants (the cache stores detached values).

Shapes: B batch, F frames, N tokens per frame, D width, H heads, K keys, C latent channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from worldsim.model import attention as attn_lib
from worldsim.model.config import ModelConfig
from worldsim.model.kvcache import CacheView, KVCache
from worldsim.model.rope import apply_rope, cos_sin, spatial_angles, temporal_angles, time_free_mask

AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# a cached attention backend: (q [R,H,Lq,Dh], k, v [R,H,Lk,Dh] as read from the cache, the pass's
# CacheView, local: the layer uses the local window) -> [R,H,Lq,Dh]. The engine hands in others
# (flash-attn, the Triton ring kernel: worldsim/engine/attention.py); the model only knows SDPA.
CachedAttend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, CacheView, bool], torch.Tensor]


def sdpa_cached(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, view: CacheView, local: bool
) -> torch.Tensor:
    """The default cached backend: SDPA with the view's additive read mask."""
    return attn_lib.sdpa(q, k, v, view.local_mask if local else view.mask)


# ---------------------------------------------------------------------------------------------------
# Conditioning: noise level and keys, per frame
# ---------------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels `t [...]` in [0, 1] -> `[..., dim]`."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0).unsqueeze(-1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B,F] -> [B,F,D]
        emb = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class KeyEmbedder(nn.Module):
    """Multi-hot keys -> `[..., D]`; a learned null embedding replaces dropped key states."""

    def __init__(self, num_keys: int, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_keys, width), nn.SiLU(), nn.Linear(width, width))
        self.null = nn.Parameter(torch.zeros(width))

    def forward(self, keys: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        e = self.mlp(keys.to(self.null.dtype))  # [B,F,K] -> [B,F,D]
        if drop is not None:
            e = torch.where(drop.unsqueeze(-1), self.null.to(e.dtype), e)
        return e


# ---------------------------------------------------------------------------------------------------
# Transformer block
# ---------------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Fused QKV projection + QK-norm; the attention itself is delegated (training or cached)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, attend: Callable) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, self.head_dim)  # [B, L, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, Dh]
        out = attend(self.q_norm(q), self.k_norm(k), v)  # [B, H, L, Dh]
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.width
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hidden = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))
        self.table = nn.Parameter(torch.zeros(6, D))  # per-block adaLN offsets (adaLN-single)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, attend: Callable) -> torch.Tensor:
        # x [B,F,N,D]; mod [B,F,6,D] shared per-frame modulation
        B, F, N, D = x.shape
        m = (mod + self.table).unsqueeze(2)  # [B,F,1,6,D] broadcast over the N tokens of a frame
        shift1, scale1, gate1, shift2, scale2, gate2 = m.unbind(3)  # each [B,F,1,D]
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h.view(B, F * N, D), attend).view(B, F, N, D)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x [B,F,N,D], c [B,F,D] -> [B,F,N,out]
        shift, scale = self.modulation(c).unsqueeze(2).chunk(2, dim=-1)  # [B,F,1,D] each
        return self.linear(self.norm(x) * (1 + scale) + shift)


# ---------------------------------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, p, C = cfg.width, cfg.patch_size, cfg.latent_channels
        # the training forward's attention ("sdpa" | "flex"; "flash" means flex on CUDA); may be switched
        # from outside. Cached passes take theirs as an argument (`forward_cached(attend=)`).
        self.attention = cfg.attention
        self.patch_in = nn.Linear(C * p * p, D)
        # frame stacking (cfg.prev_frame): the previous frame's patch and its noise level, per token
        self.prev_in = nn.Linear(C * p * p + 1, D) if cfg.prev_frame else None
        self.t_embed = TimestepEmbedder(D)
        self.key_embed = KeyEmbedder(cfg.num_keys, D)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))  # shared by all blocks
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(D, C * p * p)
        S, N, H, Dh = cfg.sinks, cfg.tokens_per_frame, cfg.heads, cfg.head_dim
        if S:
            self.sink_k = nn.Parameter(torch.zeros(cfg.depth, H, S * N, Dh))
            self.sink_v = nn.Parameter(torch.zeros(cfg.depth, H, S * N, Dh))
        angles = spatial_angles(cfg.grid, Dh, cfg.rope_theta_space)  # [N, Dh/2]
        self.register_buffer("space_angles", angles, persistent=False)
        self.register_buffer("time_free", time_free_mask(Dh), persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.t_embed.mlp[0], self.t_embed.mlp[2], self.key_embed.mlp[0], self.key_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.normal_(self.key_embed.null, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero.
        for lin in (self.modulation[1], self.final.modulation[1], self.final.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        if self.prev_in is not None:  # zero: a model grown from one without it starts as that model
            nn.init.zeros_(self.prev_in.weight)
            nn.init.zeros_(self.prev_in.bias)
        for blk in self.blocks:
            nn.init.zeros_(blk.table)
        if self.cfg.sinks:
            nn.init.normal_(self.sink_k, std=1.0)
            nn.init.normal_(self.sink_v, std=0.02)

    # pieces shared by both paths -----------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, F, C, h, w = x.shape
        p = self.cfg.patch_size
        x = x.reshape(B, F, C, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)  # [B,F,h/p,w/p,C,p,p]
        return x.reshape(B, F, (h // p) * (w // p), C * p * p)  # [B,F,N,C*p*p]

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        B, F, N, _ = x.shape
        p, C = self.cfg.patch_size, self.cfg.latent_channels
        gh, gw = self.cfg.grid
        x = x.reshape(B, F, gh, gw, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # [B,F,C,h/p,p,w/p,p]
        return x.reshape(B, F, C, gh * p, gw * p)  # [B,F,C,h,w]

    def condition(self, t: torch.Tensor, keys: torch.Tensor, drop_keys: torch.Tensor | None) -> torch.Tensor:
        """Per-frame conditioning `[B,F,D]` from noise levels `[B,F]` and keys `[B,F,K]`."""
        return self.t_embed(t) + self.key_embed(keys, drop_keys)

    def sinks(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer's sink K/V `[H, S*N, Dh]`: K QK-normed and zero on the time dims (position-free)."""
        k = self.blocks[layer].attn.k_norm(self.sink_k[layer]) * self.time_free.to(self.sink_k.dtype)
        return k, self.sink_v[layer]

    def _check(self, x: torch.Tensor, t: torch.Tensor, keys: torch.Tensor) -> None:
        cfg = self.cfg
        h, w = cfg.latent_hw
        if x.ndim != 5 or x.shape[2:] != (cfg.latent_channels, h, w):
            raise ValueError(
                f"DiT x must be [B, F, {cfg.latent_channels}, {h}, {w}] latents, got {tuple(x.shape)}"
            )
        if t.shape != x.shape[:2]:
            raise ValueError(
                f"DiT t must be [B, F] = {tuple(x.shape[:2])} noise levels, got {tuple(t.shape)}"
            )
        if keys.shape != (*x.shape[:2], cfg.num_keys):
            raise ValueError(
                f"DiT keys must be [B, F, K] = {(*x.shape[:2], cfg.num_keys)} (K = len(key_names)), "
                f"got {tuple(keys.shape)}"
            )

    def previous(
        self, x: torch.Tensor, t: torch.Tensor, first: torch.Tensor, first_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each frame's previous frame `[B,F,C,h,w]` and its level `[B,F]`: `x`, `t` shifted by one frame,
        `first [B,C,h,w]` (level `first_t [B]`) before the first."""
        return (
            torch.cat([first[:, None].to(x.dtype), x[:, :-1]], 1),
            torch.cat([first_t[:, None].to(t.dtype), t[:, :-1]], 1),
        )

    def _run(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        attend: AttendFn,
        prev: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        tokens = self.patch_in(self.patchify(x))  # [B,F,N,D]
        if self.prev_in is not None:  # frame stacking: + prev_in(previous frame's patch, its level)
            px, pt = prev
            patches = self.patchify(px)  # [B,F,N,C*p*p]
            level = pt.to(patches.dtype)[..., None, None].expand(*patches.shape[:-1], 1)
            tokens = tokens + self.prev_in(torch.cat([patches, level], -1))
        mod = self.modulation(c).unflatten(-1, (6, -1))  # [B,F,6,D]
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens, mod, lambda q, k, v, i=i: attend(i, q, k, v))
        return self.unpatchify(self.final(tokens, c))  # [B,F,C,h,w]

    # training: a whole clip ------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        keys: torch.Tensor,
        drop_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity `v [B,F,C,h,w]` for noisy latents `x [B,F,C,h,w]` at noise levels `t [B,F]`.

        `keys [B,F,K]` bool/float: the keys pressed at each frame; `drop_keys [B,F]` bool replaces them
        by the learned null state (key dropout / unconditional branch). Frames are clip-relative:
        frame f attends to frames allowed by `attention.visible` and to the sinks.
        """
        self._check(x, t, keys)
        cfg = self.cfg
        B, F = x.shape[:2]
        N, S = cfg.tokens_per_frame, cfg.sinks
        frames = torch.arange(F, device=x.device)
        angles = self.space_angles.repeat(F, 1) + temporal_angles(
            frames.repeat_interleave(N), cfg.head_dim, cfg.window
        )  # [F*N, Dh/2]
        cos, sin = cos_sin(angles, x.dtype)
        backend = self.attention
        if backend == "flash":  # flash-attn cannot express the block-causal mask: flex on CUDA
            backend = "flex" if x.is_cuda else "sdpa"
        # one mask per distinct layer window (dense: one; sparse: global + local), picked per layer
        if backend == "flex":
            masks = {
                w: attn_lib.flex_block_mask(F, N, S, cfg.block_frames, w, str(x.device))
                for w in attn_lib.mask_windows(cfg)
            }
        else:
            masks = {
                w: attn_lib.additive(
                    attn_lib.sequence_mask(
                        F, N, sinks=S, block_frames=cfg.block_frames, window=w, device=x.device
                    ),
                    x.dtype,
                )  # [F*N, (S+F)*N]
                for w in attn_lib.mask_windows(cfg)
            }

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if S:
                sk, sv = self.sinks(i)  # [H, S*N, Dh]
                k = torch.cat([sk.to(k.dtype).expand(B, -1, -1, -1), k], dim=2)  # [B,H,(S+F)*N,Dh]
                v = torch.cat([sv.to(v.dtype).expand(B, -1, -1, -1), v], dim=2)
            mask = masks[cfg.layer_window(i)]
            if backend == "flex":
                return attn_lib.flex(q, k, v, mask)
            return attn_lib.sdpa(q, k, v, mask)

        prev = None
        if self.prev_in is not None:  # the clip's first frame has none: zero latents at level 1
            prev = self.previous(x, t, x.new_zeros(B, *x.shape[2:]), t.new_ones(B))
        return self._run(x, self.condition(t, keys, drop_keys), attend, prev)

    # inference: one block against the KV cache ----------------------------------------------------
    def forward_cached(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        keys: torch.Tensor,
        cache: KVCache,
        *,
        rows: torch.Tensor | None = None,
        drop_keys: torch.Tensor | None = None,
        pending: bool = False,
        staged: bool = False,
        attend: CachedAttend | None = None,
    ) -> torch.Tensor:
        """Velocity for the current block `x [R,Fb,C,h,w]` (t `[R,Fb]`, keys `[R,Fb,K]`) of the games
        in cache rows `rows` (long `[R]`; None = all). Writes the block's K/V into the cache (each pass
        overwrites them), then attends over sinks + ring. See the module docstring for the protocol.

        Folded protocol (see `KVCache.begin`): every pass is `staged` (the block's K/V go to the cache's
        staging rows; the ring only holds finished blocks), and the first pass of a block is `pending`:
        `x [R,2Fb,...]` is the finished previous block (at its context noise level, with its own keys)
        then the current block; the previous block's K/V enter its ring slots (its cache write, in place
        of a write pass), each frame sees what it sees unfolded, and the velocity of the CURRENT block
        `[R,Fb,C,h,w]` is returned. `cache.advance()` follows the last pass, as unfolded.
        `attend`: the attention over the cache (`CachedAttend`; None = `sdpa_cached`), chosen by the caller.
        """
        self._check(x, t, keys)
        cfg = self.cfg
        Fq = 2 * cfg.block_frames if pending else cfg.block_frames
        if x.shape[1] != Fq:
            raise ValueError(
                f"forward_cached takes one block of {cfg.block_frames} frames"
                f"{' after the pending block (pending=True)' if pending else ''}: {Fq} frames, got {x.shape[1]}"
            )
        if cache.cfg.tokens_per_frame != cfg.tokens_per_frame or cache.k.shape[0] != cfg.depth:
            raise ValueError("the KVCache was built for another model config; build it from dit.cfg")
        N, Fb = cfg.tokens_per_frame, cfg.block_frames
        view = cache.begin(rows, staged=staged, pending=pending)
        # the block's tokens, rotated in space and by their frame index modulo the window (rope.py)
        angles = self.space_angles.repeat(Fq, 1) + temporal_angles(
            view.frames.repeat_interleave(N, dim=1), cfg.head_dim, cfg.window
        )  # [R, Fq*N, Dh/2]
        cos, sin = cos_sin(angles[:, None], x.dtype)  # [R, 1, Fq*N, Dh/2]
        backend = sdpa_cached if attend is None else attend

        def attend_layer(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k = apply_rope(k, cos, sin)
            sinks = self.sinks(i) if cfg.sinks else None
            # the cache stores values only (detached): later in-place writes never break a backward
            cache.write(i, view, k.detach(), v.detach())
            if sinks is not None:
                cache.write_sinks(i, sinks[0].detach(), sinks[1].detach())
            kc, vc = cache.read(i, view)
            if torch.is_grad_enabled():  # attend over an out-of-place copy that carries the gradient
                kc, vc = cache.with_grad(view, kc, vc, k, v, sinks)
            q = apply_rope(q, cos, sin).to(kc.dtype)
            out = backend(q, kc, vc, view, cfg.layer_window(i) < cfg.window)
            return out.to(x.dtype)

        prev = None
        if self.prev_in is not None:  # the frame before the block: the last one written (or pending)
            px, pt = cache.previous(view, pending)
            prev = self.previous(x, t, px, pt)
            if pending or not staged:  # this pass's last finished frame: the next block's previous
                last = Fb - 1 if pending else Fq - 1
                cache.record_last(view, x[:, last].detach(), t[:, last].detach())
        v = self._run(x, self.condition(t, keys, drop_keys), attend_layer, prev)  # [R,Fq,C,h,w]
        return v[:, Fb:] if pending else v

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
