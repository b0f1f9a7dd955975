"""What a checkpoint must satisfy before anything is built from it: its content hash, and every tensor's
name, dtype and shape against the modules its config describes (built on the meta device: nothing is
allocated), with finite weights. Each failure is one `UserError` naming the file and the tensor.

The content hash (metadata key `content_sha256`) is a sha256 over the metadata (every key but the hash,
sorted) and then every tensor of the checkpoint, its parts included, in name order: name, dtype, shape
and raw bytes, each length-prefixed. It covers what the model is (weights and config), unlike a file
hash, which changes with the layout safetensors picks, and unlike the per-part file hashes, which say
nothing about the main file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.model.config import ModelConfig
from worldsim.model.dit import DiT

log = logging.getLogger(__name__)

HASH_KEY = "content_sha256"
FLOAT_DTYPES = (torch.bfloat16, torch.float32)  # what worldsim writes for float tensors
KEY_DTYPES = (torch.bool, torch.uint8)  # start keys
# int8 storage: `k` int8 + `k.q8scale`, one scale per row or per group of a row (see checkpoint.py)
Q8_SCALE = ".q8scale"
MAX_STARTS = 1 << 16  # start latents: entries, and context frames per entry


def content_hash(flat: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """The content hash of a checkpoint's tensors `{"group/name": tensor}` and metadata (module doc)."""
    h = hashlib.sha256()

    def put(b) -> None:
        b = memoryview(b).cast("B")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    put(b"worldsim-content-v1")
    for k in sorted(metadata):
        if k != HASH_KEY:
            put(k.encode())
            put(metadata[k].encode())
    for name in sorted(flat):
        t = flat[name].detach().cpu().contiguous()
        put(name.encode())
        put(str(t.dtype).encode())
        put(json.dumps(list(t.shape)).encode())
        put(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Same names, dtypes, shapes and bytes."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k].contiguous(), b[k].contiguous()
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
            return False
    return True


def check_hash(
    path: Path, flat: Mapping[str, torch.Tensor], meta: Mapping[str, str], verify: bool, *, required: bool
) -> None:
    """Refuse `path` when its stored content hash does not match, or is `required` and missing; an
    older file without one loads (logged)."""
    if not verify:
        log.warning("%s: content hash not verified (verification turned off)", path)
        return
    stored = meta.get(HASH_KEY)
    if stored is None and required:
        raise UserError(
            f"{path} is damaged: its format requires a content hash ({HASH_KEY}) and the metadata holds "
            f"none; re-download or re-export it (--no-verify loads it anyway, at your own risk)"
        )
    if stored is None:
        log.info(
            "%s carries no content hash (written before worldsim stored one): loaded unverified; "
            "scripts/stamp_checkpoints.py adds it",
            path,
        )
        return
    if content_hash(flat, meta) != stored:
        raise UserError(
            f"{path} is damaged: its tensors or metadata do not match the content hash it stores "
            f"({HASH_KEY}); re-download or re-export it (--no-verify loads it anyway, at your own risk)"
        )


# ---------------------------------------------------------------------------------------------------
# Tensors against the config
# ---------------------------------------------------------------------------------------------------


def check_tensors(path: Path, config: ModelConfig, groups: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Every group's dtypes, finiteness and (for dit, autoencoder, start) names and shapes."""
    with torch.device("meta"):  # the shapes the config implies, without allocating the model
        expected = {
            "dit": _shapes(DiT(config).state_dict()),
            "autoencoder": _shapes(Autoencoder(config.autoencoder).state_dict()),
        }
    for group, state in groups.items():
        shapes = _check_values(path, group, state)
        if group == "start":
            _check_start(path, config, state)
        elif group in expected:
            _check_shapes(path, group, shapes, expected[group])


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def stored_scale_fits(t: torch.Tensor, scale: torch.Tensor) -> bool:
    """Whether `scale` fits int8 tensor `t` as `.q8scale` storage: one scale per index of dim 0 `[d0]`, or
    for a matrix `[d0, d1]` one per group of columns `[d0, G]` (G dividing d1: groups of d1 / G)."""
    if tuple(scale.shape) == tuple(t.shape[:1]):
        return True
    if t.dim() != 2 or scale.dim() != 2 or scale.shape[0] != t.shape[0]:
        return False
    return 0 < scale.shape[1] <= t.shape[1] and t.shape[1] % scale.shape[1] == 0


def int8_scale_name(state: Mapping[str, torch.Tensor], k: str) -> str | None:
    """The name of the scales stored beside int8 tensor `k`: `k.q8scale`, or `X.scale` for a DiT
    `X.weight` (the engine's int8 layer, engine/quant.py); None if there is none."""
    if k + Q8_SCALE in state:
        return k + Q8_SCALE
    if k.endswith(".weight") and k[: -len(".weight")] + ".scale" in state:
        return k[: -len(".weight")] + ".scale"
    return None


def _is_scale_of_int8(state: Mapping[str, torch.Tensor], k: str) -> bool:
    if k.endswith(Q8_SCALE):
        return True  # its pair is checked where it is folded (checkpoint.py)
    w = k[: -len(".scale")] + ".weight" if k.endswith(".scale") else None
    return w is not None and w in state and state[w].dtype == torch.int8


def _check_values(path: Path, group: str, state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Dtypes and finiteness; returns the float shapes (int8 tensors count as the float they encode)."""
    shapes = {}
    for k, t in state.items():
        where = f"{path}: {group}/{k}"
        if k.endswith(Q8_SCALE) and k[: -len(Q8_SCALE)] not in state:
            raise UserError(f"{where} has no int8 tensor beside it; the file is damaged: re-export it")
        if _is_scale_of_int8(state, k):
            continue  # checked with its int8 tensor
        if t.dtype == torch.int8:
            s = int8_scale_name(state, k)
            scale = None if s is None else state[s]
            per_row = scale is not None and tuple(scale.shape) == tuple(t.shape[:1])
            fits = per_row or (scale is not None and s.endswith(Q8_SCALE) and stored_scale_fits(t, scale))
            if not fits:
                raise UserError(
                    f"{where} is int8 {tuple(t.shape)} without one scale per row (or per group of a row) "
                    f"beside it; the file is damaged: re-export it"
                )
            if scale.dtype not in FLOAT_DTYPES:
                raise UserError(
                    f"{path}: {group}/{s} is stored as {_name(scale.dtype)}, which worldsim never writes "
                    f"for scales (bfloat16 or float32); the file was relabelled: re-export it"
                )
            if not (torch.isfinite(scale).all() and (scale > 0).all()):
                raise UserError(
                    f"{where} has non-finite or non-positive scales; the file is damaged: re-export it"
                )
        elif t.dtype in FLOAT_DTYPES:
            if not torch.isfinite(t).all():
                raise UserError(f"{where} holds NaN or infinite values; the file is damaged: re-export it")
        elif not (
            (group == "start" and k == "keys" and t.dtype in KEY_DTYPES)
            or (group == "start_frames" and k == "frames" and t.dtype == torch.uint8)  # a dataset run's
        ):
            raise UserError(
                f"{where} is stored as {_name(t.dtype)}, which worldsim never writes "
                f"there (bfloat16 or float32; int8 beside its scales); the file was relabelled or written "
                f"by other code: re-export it"
            )
        shapes[k] = tuple(t.shape)
    return shapes


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def mismatch(got: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]]) -> str:
    """'' when the names and shapes agree, else a short list of what differs (for error messages)."""
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    bad = [f"{k} {got[k]} vs {v}" for k, v in want.items() if k in got and got[k] != v]
    parts = []
    for label, items, n in (("missing tensors", missing, 5), ("unexpected tensors", unexpected, 5),
                            ("shape mismatch", bad, 3)):  # fmt: skip
        if items:
            parts.append(f"{label} {items[:n]}{' ...' if len(items) > n else ''}")
    return "; ".join(parts)


def _check_shapes(path: Path, group: str, got: dict, want: dict) -> None:
    diff = mismatch(got, want)
    if diff:
        raise UserError(
            f"{path}: the {group!r} weights do not fit the model its config describes ({diff}); the file "
            f"is damaged or was written by other code: re-export it"
        )


def _check_start(path: Path, cfg: ModelConfig, state: Mapping[str, torch.Tensor]) -> None:
    C, (h, w) = cfg.latent_channels, cfg.latent_hw
    extra = sorted(set(state) - {"latents", "keys"})
    z, keys = state.get("latents"), state.get("keys")
    if extra or z is None:
        raise UserError(
            f"{path}: the start group must hold 'latents' (and optionally 'keys'), got {sorted(state)}"
        )
    shape = tuple(z.shape)
    full = shape if z.ndim == 5 else (shape[0], 1, *shape[1:]) if z.ndim == 4 else None
    if full is None or full[2:] != (C, h, w) or not (0 < full[0] <= MAX_STARTS and 0 < full[1] <= MAX_STARTS):
        raise UserError(
            f"{path}: start/latents is {list(shape)}, but this config's latents are [M, (T,) {C}, {h}, {w}]; "
            f"the file is damaged: re-export it"
        )
    if keys is not None and tuple(keys.shape) != (*full[:2], cfg.num_keys):
        raise UserError(
            f"{path}: start/keys is {list(keys.shape)}, expected {[*full[:2], cfg.num_keys]} (M, T, keys); "
            f"the file is damaged: re-export it"
        )
