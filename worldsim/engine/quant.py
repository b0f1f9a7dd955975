"""8-bit weights, applied to a DiT from outside (the model stays pure; gpt-fast style).

`quantize_int8(dit)` swaps every `nn.Linear` of the DiT's transformer blocks for an `Int8Linear`: int8
weights `[out, in]` with one fp scale per output channel (symmetric, absmax / 127). `dequantize(dit)` swaps
them back. The quantized DiT's `state_dict()` holds the int8 weights and scales under the layers' own names
(`blocks.0.attn.qkv.weight` int8, `blocks.0.attn.qkv.scale`), so it goes through `save_checkpoint` as the
"dit" group unchanged; `load_dit` reads either kind of checkpoint into either kind of DiT, and
`export_int8` writes an 8-bit checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.checkpoint import load_checkpoint, load_module, save_checkpoint
from worldsim.engine.fp8 import quantize_fp8
from worldsim.model.dit import DiT
from worldsim.storage8 import quantize_stored

log = logging.getLogger(__name__)

WEIGHTS = ("fp", "int8", "fp8")

# The Triton int8 matmul (kernels/w8_matmul.py) runs for the (M, K, N) shapes listed here, where the
# engine measured it faster than the cast-matmul (`choose_w8_kernel`); W8_KERNEL_ALWAYS forces it (the
# bench's "int8-triton"). Both empty/False by default: the PyTorch path, and always on CPU.
W8_KERNEL_SHAPES: set[tuple[int, int, int]] = set()
W8_KERNEL_ALWAYS = False


class Int8Linear(nn.Module):
    """`nn.Linear` with int8 weights `[out, in]` and per-output-channel scales `[out]`.

    y = (x @ W_int8^T) * scale + bias: W is cast to x's dtype inside the matmul and the scale is applied to
    the `[.., out]` result (gpt-fast's form; no dequantized copy of W is kept). `torch._weight_int8pack_mm`
    computes the same on CPU but measured ~40x slower than this on the dev CPU (M=64, K=256, N=768, one
    thread: 16 ms vs 0.3 ms), and `torch._int_mm` needs int8 activations, so neither is used.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.ones(out_features, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int8Linear:
        w = lin.weight.detach().float()  # [out, in]
        q, scale = quantize_weight(w)
        m = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device=w.device)
        m.weight.copy_(q)
        m.scale.copy_(scale)
        if lin.bias is not None:
            m.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        return m.to(lin.weight.dtype)  # scale and bias follow the layer's float dtype; int8 stays int8

    def dequantized(self) -> torch.Tensor:
        """The fp weight `[out, in]` this layer computes with (in the scale's dtype)."""
        return self.weight.to(self.scale.dtype) * self.scale[:, None]

    def to_linear(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin = lin.to(device=self.scale.device, dtype=self.scale.dtype)
        lin.weight.data.copy_(self.dequantized())
        if self.bias is not None:
            lin.bias.data.copy_(self.bias.detach())
        lin.requires_grad_(self.bias is None or self.bias.requires_grad)
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        if W8_KERNEL_ALWAYS or W8_KERNEL_SHAPES:
            y = self._kernel(x)
            if y is not None:
                return y
        return _cast_matmul(x, self.weight, self.scale, self.bias)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor | None:
        from worldsim.kernels.w8_matmul import supported, w8_matmul  # triton (heavy, optional) comes with it

        x2 = x.reshape(-1, self.in_features)  # [M, K]
        shape = (x2.shape[0], self.in_features, self.out_features)
        if not (W8_KERNEL_ALWAYS or shape in W8_KERNEL_SHAPES) or not supported(x2, self.weight):
            return None
        y = w8_matmul(x2, self.weight, self.scale, self.bias)  # [M, N]
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


def _cast_matmul(
    x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    y = F.linear(x, w.to(x.dtype)) * scale.to(x.dtype)
    return y if bias is None else y + bias.to(x.dtype)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: `w [out, in]` -> (int8 `[out, in]`, fp32 scale `[out]`), w ~ q * scale."""
    if w.ndim != 2:
        raise ValueError(f"quantize_weight takes a [out, in] matrix, got shape {tuple(w.shape)}")
    w = w.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # [out]; an all-zero row keeps scale ~0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


# ---------------------------------------------------------------------------------------------------
# Whole-DiT swaps
# ---------------------------------------------------------------------------------------------------


def _swap(root: nn.Module, kind: type, convert) -> int:
    n = 0
    for parent in root.modules():
        for name, child in list(parent.named_children()):
            if type(child) is kind:
                setattr(parent, name, convert(child))
                n += 1
    return n


def quantize_int8(dit: DiT, *, everything: bool = False) -> DiT:
    """Swap the `nn.Linear`s of `dit`'s blocks (qkv, proj, MLP: ~90% of the weights) for `Int8Linear`s in
    place and return `dit`. `everything=True` also quantizes the shared modulation and the final layer
    (they feed every block / the output, so they stay fp by default); the tiny embedders always stay fp
    (the timestep embedder reads its first layer's weight dtype)."""
    roots = [*dit.blocks, dit.modulation, dit.final] if everything else list(dit.blocks)
    n = sum(_swap(r, nn.Linear, Int8Linear.from_linear) for r in roots)
    log.debug("quantize_int8: %d linear layers to int8", n)  # the load logs one line of its own
    return dit


def dequantize(dit: DiT) -> DiT:
    """The inverse swap: every `Int8Linear` back to an `nn.Linear` with the dequantized weights."""
    _swap(dit, Int8Linear, Int8Linear.to_linear)
    return dit


def is_int8_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a DiT state dict (a checkpoint's "dit" group) holds int8 weights."""
    return any(t.dtype == torch.int8 for t in state.values())


def int8_tensors(dit: DiT, float_dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The state dict of a quantized `dit` for `save_checkpoint`: int8 weights as they are, scales in
    fp32, every other float tensor in `float_dtype` (bf16 = the size a shipped checkpoint would have)."""
    out = {}
    for k, t in dit.state_dict().items():
        if t.dtype == torch.int8 or k.endswith(".scale"):
            out[k] = t if t.dtype == torch.int8 else t.float()
        else:
            out[k] = t.to(float_dtype) if t.is_floating_point() else t
    if not is_int8_state(out):
        raise ValueError("int8_tensors needs a quantized DiT: call quantize_int8(dit) first")
    return out


def load_dit(ckpt, *, weights: str = "fp", calibration=None) -> DiT:
    """The DiT of a `LoadedCheckpoint` with `weights` "fp", "int8" or "fp8", whichever the file holds.

    An fp checkpoint is quantized after loading for "int8"; an int8 checkpoint loads into a quantized DiT
    (which `dequantize`s for "fp", so an 8-bit file also runs as a plain model). "fp8" needs the
    activation scales of `calibration` (`fp8.calibrate(world)`; `NeuralWorld.from_checkpoint(...,
    weights="fp8")` calibrates for you).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "fp8":
        return apply_weights(load_dit(ckpt), "fp8", calibration=calibration, copy=False)
    dit = DiT(ckpt.config)
    state = ckpt.tensors.get("dit", {})
    if is_int8_state(state):
        quantize_int8(dit, everything=_all_quantized(state, dit))
        load_module(dit, ckpt, "dit")
        return dequantize(dit) if weights == "fp" else dit
    load_module(dit, ckpt, "dit")
    return quantize_int8(dit) if weights == "int8" else dit


def apply_weights(dit: DiT, kind: str, *, calibration=None, copy: bool = True) -> DiT:
    """`dit` prepared for `kind` ("fp" | "int8" | "fp8"): "fp" returns `dit` itself; otherwise a
    quantized copy (`copy=False`: in place), so one process can run all three side by side.

    "fp8" needs `calibration` (an `fp8.Fp8Calibration` from `fp8.calibrate(world)` on an fp world with
    the same sampler and steps: its scales are per pass of that engine's frame).
    """
    if kind not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {kind!r}")
    if kind == "fp":
        return dit
    if kind == "fp8" and calibration is None:
        raise ValueError(
            "apply_weights(dit, 'fp8') needs calibration=fp8.calibrate(world) (activation scales per pass)"
        )
    if any(isinstance(m, Int8Linear) for m in dit.modules()):
        raise ValueError("apply_weights takes an fp DiT; this one is already int8 (dequantize(dit) first)")
    out = deepcopy(dit) if copy else dit
    return quantize_int8(out) if kind == "int8" else quantize_fp8(out, calibration)


def choose_w8_kernel(dit: DiT, rows: list[int], *, repeats: int = 50) -> dict[tuple[int, int, int], dict]:
    """Time the Triton int8 matmul against the cast-matmul at every `Int8Linear` shape of `dit` for each
    M in `rows` (tokens per pass, e.g. sessions * 64) and add the shapes where the kernel won to
    `W8_KERNEL_SHAPES`. CUDA only (returns {} elsewhere: the PyTorch path stays). Host syncs: timing.
    """
    from worldsim.kernels.bench import time_call  # the kernels bring triton (heavy, optional): CUDA only
    from worldsim.kernels.w8_matmul import supported, w8_matmul

    layers = {(m.in_features, m.out_features): m for m in dit.modules() if isinstance(m, Int8Linear)}
    if not layers or not next(iter(layers.values())).weight.is_cuda:
        return {}
    out = {}
    for (K, N), m in sorted(layers.items()):
        for M in rows:
            x = torch.randn(M, K, device=m.weight.device, dtype=m.scale.dtype)
            if not supported(x, m.weight):
                continue
            args = (x, m.weight, m.scale, m.bias)
            torch_ms = time_call(functools.partial(_cast_matmul, *args), repeats)
            kernel_ms = time_call(functools.partial(w8_matmul, *args), repeats)
            out[(M, K, N)] = {"torch_ms": torch_ms, "triton_ms": kernel_ms}
            if kernel_ms < torch_ms:
                W8_KERNEL_SHAPES.add((M, K, N))
    log.info("choose_w8_kernel: the Triton int8 matmul wins at %s", sorted(W8_KERNEL_SHAPES))
    return out


def _all_quantized(state: Mapping[str, torch.Tensor], dit: DiT) -> bool:
    # the file was written with everything=True when a layer outside the blocks holds int8 weights
    return any(t.dtype == torch.int8 and not k.startswith("blocks.") for k, t in state.items())


def export_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    float_dtype: torch.dtype = torch.bfloat16,
    group: int | None = None,
) -> Path:
    """Write `src`'s checkpoint with an 8-bit DiT: the blocks' linears as `Int8Linear` weights, and every
    other matrix or convolution of at least 4,096 elements (the DiT's embeddings and modulation, the
    autoencoder) stored as int8 with per-channel scales, read back as floats (`checkpoint.quantize_stored`);
    every other float tensor in `float_dtype`.

    `group` g: the blocks' linears are stored as int8 with one scale per g input columns of each output
    row instead, and read back as floats too (the file loads as an fp model; `weights="int8"` at load
    still makes per-row `Int8Linear`s of it). One scale per row moves a self-forced student's still view
    off its fixed point; per 32 columns keeps it (docs/design.md §7.4)."""
    ckpt = load_checkpoint(src)

    def cast(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (t.to(float_dtype) if t.is_floating_point() else t) for k, t in state.items()}

    groups = {g: cast(s) for g, s in ckpt.tensors.items() if g != "dit"}
    if group is None:
        groups["dit"] = quantize_stored(int8_tensors(load_dit(ckpt, weights="int8"), float_dtype))
    else:
        dit = DiT(ckpt.config)
        load_module(dit, ckpt, "dit")
        names = {
            f"{n}.weight" for n, m in dit.blocks.named_modules(prefix="blocks") if isinstance(m, nn.Linear)
        }
        state = cast(dit.state_dict())
        groups["dit"] = {
            **quantize_stored({k: t for k, t in state.items() if k not in names}),
            **quantize_stored({k: t for k, t in state.items() if k in names}, group=group),
        }
    if "autoencoder" in groups:
        groups["autoencoder"] = quantize_stored(groups["autoencoder"])
    weights = "int8" if group is None else f"int8-g{group}"
    metrics = {**ckpt.metrics, "weights": weights, "quantized_from": ckpt.sha256}
    return save_checkpoint(dst, config=ckpt.config, tensors=groups, metrics=metrics)
