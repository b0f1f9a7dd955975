"""fp8 (e4m3) W8A8 for the DiT's block linears, applied from outside the model like int8 (quant.py).

Weights: per-output-channel fp8 (absmax / 448). Activations: one per-tensor scale PER PASS of the frame,
because activation statistics change across the denoising steps (docs/design.md §7.4). The
frame function says which pass runs through its `passes` hook (worldsim/frame.py): the DiT's `PassIndex`
is that hook, called with the pass number 0, 1, ... and `WRITE_PASS` (-1: the last scale) for the
cache-write pass at the context noise level. The index is a Python int, so each pass captured in a CUDA
graph reads a static scale and nothing syncs. A DiT whose engine never sets the index uses the largest
scale of all passes.

Scales come from `calibrate(world)`: a few rollouts of the fp world (start latents, random keys) with a
pre-hook on every block linear recording its input absmax per pass index. `fp8_world(world)` calibrates
a `NeuralWorld`, swaps its DiT's linears in place and hands the world the hook (calibration happens at load, a second or so; no fp8
checkpoint format).

Matmul: `torch._scaled_mm` (row-wise scales, bf16 out) on CUDA with compute capability >= 8.9, bf16
activations and K, N multiples of 16; elsewhere (CPU, tests, fp32, odd shapes) an exact emulation:
the same fp8 x and W dequantized and multiplied in fp32 (the same numbers up to accumulation order).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from worldsim.frame import WRITE_PASS
from worldsim.model.dit import DiT

log = logging.getLogger(__name__)

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


class PassIndex:
    """The pass of the frame that runs now, shared by a DiT's fp8 layers (None = not told). Calling it
    sets it: it is the frame function's `passes` hook."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self, i: int | None) -> None:
        self.value = i


def pass_index(dit: nn.Module) -> PassIndex | None:
    return dit.__dict__.get("fp8_pass")


def attach_pass_index(dit: nn.Module) -> PassIndex:
    """The DiT's `PassIndex`, created on first use (a plain attribute: not in the state dict)."""
    p = pass_index(dit)
    if p is None:
        p = PassIndex()
        dit.__dict__["fp8_pass"] = p
    return p


def set_pass(dit: nn.Module, i: int | None) -> None:
    """Tell `dit`'s per-pass layers that pass `i` runs next (no-op for a DiT without them)."""
    p = pass_index(dit)
    if p is not None:
        p.value = i


# ---------------------------------------------------------------------------------------------------
# Quantization (shared by the fast path and the emulation so both see identical fp8 values)
# ---------------------------------------------------------------------------------------------------


def quantize_fp8_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row e4m3: `w [out, in]` -> (fp8 `[out, in]`, fp32 scale `[out]`), w ~ q * scale."""
    if w.ndim != 2:
        raise ValueError(f"quantize_fp8_weight takes a [out, in] matrix, got shape {tuple(w.shape)}")
    w = w.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / E4M3_MAX  # [out]
    return (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def quantize_fp8_act(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale in fp32, saturated to +-448, rounded to e4m3 (the cast is round-to-nearest-even)."""
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _scaled_mm_ok(x: torch.Tensor, K: int, N: int) -> bool:
    if not x.is_cuda or x.dtype != torch.bfloat16 or K % 16 or N % 16:
        return False
    return hasattr(torch, "_scaled_mm") and _capability(x.device.index or 0) >= (8, 9)


class Fp8Linear(nn.Module):
    """`nn.Linear` in fp8 W8A8: e4m3 weights `[out, in]` with fp scales `[out]`, activations quantized
    per tensor with the scale of the current pass (`act_scale [passes + 1]`, the last = `WRITE_PASS`).

    The weight is stored as its uint8 bits (`.to(dtype)` would otherwise cast fp8, a float dtype);
    scales follow the module's float dtype and are read in fp32.
    """

    def __init__(self, in_features: int, out_features: int, passes: int, bias: bool = True, device=None):
        super().__init__()
        if passes < 1:
            raise ValueError(f"Fp8Linear needs >= 1 calibrated pass, got passes={passes}")
        self.in_features, self.out_features, self.passes = in_features, out_features, passes
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.uint8, device=device)
        )
        self.register_buffer("w_scale", torch.ones(out_features, device=device))
        self.register_buffer("act_scale", torch.ones(passes + 1, device=device))  # [passes + write]
        self.register_buffer("act_scale_max", torch.ones((), device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None
        self.pass_state = PassIndex()  # replaced by the DiT's shared one in quantize_fp8
        self.fast = True  # cleared (per layer, logged) if torch._scaled_mm refuses this layer

    @classmethod
    def from_linear(cls, lin: nn.Linear, amax: torch.Tensor, state: PassIndex) -> Fp8Linear:
        """`lin` with input absmax per pass `amax [passes + 1]` (the last = the write pass)."""
        w = lin.weight.detach()
        q, scale = quantize_fp8_weight(w)
        m = cls(
            lin.in_features, lin.out_features, amax.numel() - 1, bias=lin.bias is not None, device=w.device
        )
        m.weight.copy_(q.view(torch.uint8))
        m.w_scale.copy_(scale)
        s = amax.float().to(w.device).clamp(min=1e-12) / E4M3_MAX
        m.act_scale.copy_(s)
        m.act_scale_max.copy_(s.max())
        if lin.bias is not None:
            m.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        m.pass_state = state
        return m.to(w.dtype)

    def weight_fp8(self) -> torch.Tensor:
        return self.weight.view(E4M3)  # [out, in]

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight `[out, in]` this layer computes with."""
        return self.weight_fp8().float() * self.w_scale.float()[:, None]

    def current_scale(self) -> torch.Tensor:
        """The activation scale (0-dim fp32) of the pass the engine set; the largest one if none was set."""
        i = self.pass_state.value
        if i is None:
            return self.act_scale_max.float()
        if not -1 <= i < self.passes:
            raise ValueError(
                f"Fp8Linear was calibrated for {self.passes} passes per frame (+ the write pass), but the "
                f"engine runs pass {i}; calibrate with the sampler and steps it runs (fp8.calibrate(world))"
            )
        return self.act_scale[i].float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        K, N = self.in_features, self.out_features
        x2 = x.reshape(-1, K)  # [M, K]
        s = self.current_scale()
        xq = quantize_fp8_act(x2, s)  # [M, K] e4m3
        if self.fast and _scaled_mm_ok(x, K, N):
            try:
                y = torch._scaled_mm(
                    xq,
                    self.weight_fp8().t(),  # [K, N] column-major, as cuBLASLt wants it
                    scale_a=s.expand(x2.shape[0], 1).contiguous(),  # [M, 1] row-wise
                    scale_b=self.w_scale.float()[None, :],  # [1, N]
                    bias=None if self.bias is None else self.bias.to(torch.bfloat16),
                    out_dtype=torch.bfloat16,
                )
                return y.reshape(*x.shape[:-1], N)
            except RuntimeError as e:  # argument checks run on the host, before any launch
                self.fast = False
                log.warning("Fp8Linear %dx%d: torch._scaled_mm refused (%s); emulating", K, N, e)
        y = (xq.float() * s) @ self.dequantized().t()  # [M, N] fp32
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], N)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"passes={self.passes}, bias={self.bias is not None}"
        )


# ---------------------------------------------------------------------------------------------------
# Calibration and the whole-DiT swap
# ---------------------------------------------------------------------------------------------------


@dataclass
class Fp8Calibration:
    """Input absmax per quantized linear (name inside the DiT) and pass: `amax[name]` `[passes + 1]`,
    entry i = pass i of the frame, the last = the cache-write pass."""

    amax: dict[str, torch.Tensor]
    passes: int
    info: dict = field(default_factory=dict)

    def scales_differ(self) -> float:
        """Largest ratio between two passes' absmax of one layer (1 = per-pass scales change nothing)."""
        return max((a.max() / a.min().clamp(min=1e-12)).item() for a in self.amax.values())


def targets(dit: DiT) -> list[str]:
    """Names of the linears fp8 replaces: every `nn.Linear` of the transformer blocks (as int8 does)."""
    return [
        f"blocks.{i}.{n}"
        for i, b in enumerate(dit.blocks)
        for n, m in b.named_modules()
        if type(m) is nn.Linear
    ]


@torch.inference_mode()
def calibrate(
    world, *, frames: int = 8, games: int = 4, seed: int = 0, p_key: float = 0.25
) -> Fp8Calibration:
    """Record every block linear's input absmax per pass over `games` rollouts of `frames` frames of
    `world` (an fp `NeuralWorld`: its start latents, random keys), through the engine's own pass hooks.

    Leaves the world's cache empty and its generator reseeded, as constructed.
    """
    dit = world.dit
    names = targets(dit)
    if not names:
        raise ValueError("calibrate needs an fp DiT (its blocks hold no nn.Linear; already quantized?)")
    state = attach_pass_index(dit)
    seen: dict[str, dict[int, torch.Tensor]] = {n: {} for n in names}

    def hook(name: str):
        def record(_module, args):
            i = state.value
            if i is None:
                raise RuntimeError(
                    "fp8 calibration saw a pass without a pass index: the world's step must hand its "
                    "`passes` hook to the frame function (worldsim/frame.py)"
                )
            a = args[0].detach().abs().amax().float()  # on the device: no sync per pass
            prev = seen[name].get(i)
            seen[name][i] = a if prev is None else torch.maximum(prev, a)

        return record

    handles = [dit.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    t0 = time.perf_counter()
    hook_before, world.passes = world.passes, state
    try:
        R = min(games, world.batch_size)
        slots = None if world.batch_size == R else list(range(R))
        g = torch.Generator().manual_seed(seed)
        world.reset(list(range(seed, seed + R)), slots=slots)
        for _ in range(frames):
            keys = torch.rand(R, world.num_keys, generator=g) < p_key
            world.step(keys, slots=slots)
    finally:
        for h in handles:
            h.remove()
        set_pass(dit, None)
        world.passes = hook_before
    world.cache.reset(None)
    world.generator.manual_seed(0)
    passes = 1 + max((i for d in seen.values() for i in d if i >= 0), default=-1)
    amax = {}
    for n, d in seen.items():
        top = torch.stack(list(d.values())).max()
        row = [d.get(i, top) for i in range(passes)] + [d.get(WRITE_PASS, top)]
        amax[n] = torch.stack(row).cpu()  # deliberate host sync: calibration, once at load
    info = {"frames": frames, "games": R, "seed": seed, "seconds": time.perf_counter() - t0}
    cal = Fp8Calibration(amax=amax, passes=passes, info=info)
    log.info(
        "fp8 calibration: %d layers x %d passes (+ write) from %d games x %d frames in %.2f s",
        len(amax), passes, R, frames, info["seconds"],
    )  # fmt: skip
    return cal


def quantize_fp8(dit: DiT, calibration: Fp8Calibration) -> DiT:
    """Swap `dit`'s block linears for `Fp8Linear`s (in place) with `calibration`'s per-pass scales."""
    state = attach_pass_index(dit)
    missing = [n for n in targets(dit) if n not in calibration.amax]
    if missing:
        raise ValueError(
            f"the fp8 calibration has no scales for {len(missing)} layers (e.g. {missing[0]}); "
            f"calibrate this model: fp8.calibrate(world)"
        )
    for n in targets(dit):
        parent, _, child = n.rpartition(".")
        lin = dit.get_submodule(n)
        setattr(dit.get_submodule(parent), child, Fp8Linear.from_linear(lin, calibration.amax[n], state))
    log.info(
        "quantize_fp8: %d linear layers to fp8 (e4m3), %d passes", len(calibration.amax), calibration.passes
    )
    return dit


def fp8_world(world, **calibrate_kwargs):
    """Calibrate the fp `NeuralWorld` `world` and run its DiT in fp8 from now on; returns `world`."""
    quantize_fp8(world.dit, calibrate(world, **calibrate_kwargs))
    world.dit.requires_grad_(False)
    world.passes = pass_index(world.dit)  # the frame function tells the fp8 layers which pass runs
    return world
