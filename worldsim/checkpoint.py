"""Shipped checkpoints: one safetensors file (never pickle) with the model config and metrics as JSON.

Layout: tensors are named `<group>/<state-dict name>` ("dit/blocks.0.attn.qkv.weight",
"autoencoder/...", "start/latents"); the metadata holds `format`, `format_version`, `config` (the
`ModelConfig` as JSON) and `metrics` (JSON). Bare names resolve to `<repo root>/checkpoints/<name>.safetensors`.
Writes are atomic (tmp + rename). A checkpoint larger than the per-file budget (16 MiB, what comes back
from the GPU machine) is written as `<name>.safetensors` (metadata + the first tensors) plus parts
`<name>.part2.safetensors`, ...; the main file's metadata lists each part with its sha256, so a missing,
truncated or swapped part is a clear error and the main file's hash identifies the whole checkpoint.
8-bit storage (the autoencoder and the DiT's other matrices of an 8-bit export; with `group`, its blocks'
linears too): a float tensor `k` may be stored as int8 `k` plus scales `k.q8scale` (one per index of dim
0, or per group of columns of a matrix's row); `load_checkpoint` turns the pair back
into a float tensor (worldsim/storage8.py), so everything that reads checkpoints sees float weights.
Integrity (worldsim/checkpoint_check.py): the metadata holds a content hash of the tensors (parts
included) and the metadata, checked at load; every tensor is checked against the config (names, shapes,
dtypes, finite values) before a module is built. `verify=False` (the CLI's `--no-verify`) skips the
hashes, for a file edited on purpose; the structural checks always run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from worldsim.checkpoint_check import (
    HASH_KEY,
    check_hash,
    check_tensors,
    content_hash,
    mismatch,
    same_tensors,
)
from worldsim.device import default_device
from worldsim.errors import UserError
from worldsim.model.config import ModelConfig
from worldsim.storage8 import dequantize_linear_state, dequantize_stored

log = logging.getLogger(__name__)

FORMAT = "worldsim"
# 2: the metadata must hold the content hash (checkpoint_check.py); 1: written before there was one
# (loads unverified). Requiring it by version means damage to the hash's key cannot pass for a version-1 file.
FORMAT_VERSION = 2
SUFFIX = ".safetensors"
MAX_FILE_BYTES = 16 * 2**20  # docs/design.md §4: what comes back from the GPU machine
# Preference order of shipped checkpoints per device kind (the first that exists wins), by measured
# quality where the device plays every candidate well above 30 frames/s. The shipped `tiny-student`
# (1 step, 643 frames/s on an H100, ~20-38 on 2 CPU cores) leads on both devices, its 2-step teacher
# `tiny` comes after. Checkpoints of other games (`breakout`) are never a default: they play another
# world than the built-in one (see checkpoints/*.md).
PREFERENCE = {
    "cuda": ("tiny-student", "tiny"),
    "cpu": ("tiny-student", "tiny"),
}


@dataclass
class LoadedCheckpoint:
    config: ModelConfig
    tensors: dict[str, dict[str, torch.Tensor]]  # group -> state-dict name -> tensor
    metrics: dict = field(default_factory=dict)
    path: Path = Path()
    sha256: str = ""

    def float_state(self, group: str) -> dict[str, torch.Tensor]:
        """Group `group` as the plain module's fp32 state dict, whatever the file stores.

        An 8-bit DiT stores each quantized linear as int8 `X.weight` plus per-output-row `X.scale` (the
        engine's int8 layer, `engine/quant.py`); this folds every such pair back into a float `X.weight`,
        so training (`--init`, `--teacher`) and any plain `nn.Module` can load a shipped 8-bit file.
        """
        if group not in self.tensors:
            raise UserError(
                f"{self.path} has no {group!r} tensors (groups: {sorted(self.tensors)}); re-export it"
            )
        return dequantize_linear_state(self.tensors[group], where=f"{self.path}: {group}")


# ---------------------------------------------------------------------------------------------------
# Finding checkpoints
# ---------------------------------------------------------------------------------------------------


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def checkpoints_dir() -> Path:
    """Where the shipped models are: inside the installed package (a wheel or sdist install carries them as
    `worldsim/checkpoints/`), else the repository's `checkpoints/` beside the package (a source tree or an
    editable install)."""
    installed = Path(__file__).resolve().parent / "checkpoints"
    return installed if installed.is_dir() else repo_root() / "checkpoints"


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoints in `<repo root>/checkpoints/`."""
    d = checkpoints_dir()
    return sorted(p.stem for p in d.glob(f"*{SUFFIX}") if not _is_part(p)) if d.is_dir() else []


def _is_part(p: Path) -> bool:
    """`name.part2.safetensors` and later: the extra files of a sharded checkpoint."""
    stem, _, n = p.stem.rpartition(".part")
    return bool(stem) and n.isdigit()


def _part_path(path: Path, i: int) -> Path:
    return path.with_name(f"{path.stem}.part{i}{SUFFIX}")


def _shards(flat: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    """Split the tensors into files of at most ~`max_bytes` each (in name order; one tensor never splits)."""
    budget = None if max_bytes is None else max_bytes - (64 << 10)  # headers and metadata
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(flat):
        n = flat[name].numel() * flat[name].element_size()
        if budget is not None and shards[-1] and size + n > budget:
            shards.append({})
            size = 0
        shards[-1][name] = flat[name]
        size += n
    return shards


def default_checkpoint(device: torch.device | str | None = None) -> Path | None:
    """The best shipped checkpoint for `device` (None: cuda if available, else cpu), or None."""
    device = default_device() if device is None else device
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    for name in PREFERENCE[kind]:
        p = checkpoints_dir() / f"{name}{SUFFIX}"
        if p.is_file():
            return p
    return None


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A bare name ("tiny") -> checkpoints/tiny.safetensors; a path stays a path. It must exist."""
    s = str(name_or_path)
    looks_like_path = os.sep in s or "/" in s or s.endswith(SUFFIX) or Path(s).exists()
    p = Path(s) if looks_like_path else checkpoints_dir() / f"{s}{SUFFIX}"
    if p.is_file():
        return p
    shipped = ", ".join(shipped_checkpoints()) or "none"
    if looks_like_path:
        raise UserError(
            f"checkpoint file {p} does not exist; pass an existing path or a shipped name ({shipped})"
        )
    raise UserError(
        f"no checkpoint named {s!r} (looked for {p}); shipped checkpoints: {shipped}; "
        f"or pass a path to a .safetensors file"
    )


# ---------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    *,
    config: ModelConfig,
    tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    metrics: dict | None = None,
    dit: Mapping[str, torch.Tensor] | None = None,
    autoencoder: Mapping[str, torch.Tensor] | None = None,
    start_latents: torch.Tensor | None = None,
    max_file_bytes: int | None = MAX_FILE_BYTES,
) -> Path:
    """Write a checkpoint atomically. `tensors` is {group: {name: tensor}}; `dit`, `autoencoder` and
    `start_latents` are shorthands for the groups "dit", "autoencoder" and "start" ({"latents": ...}).
    Over `max_file_bytes` (None = never) the tensors go into parts beside the main file (module doc)."""
    from safetensors.torch import save_file

    groups: dict[str, Mapping[str, torch.Tensor]] = dict(tensors or {})
    for group, value in (("dit", dit), ("autoencoder", autoencoder)):
        if value is not None:
            groups[group] = value
    if start_latents is not None:
        groups["start"] = {**groups.get("start", {}), "latents": start_latents}
    if "dit" not in groups:
        raise ValueError("save_checkpoint needs the DiT weights: pass tensors={'dit': ...} or dit=...")
    flat: dict[str, torch.Tensor] = {}
    for group, state in groups.items():
        if "/" in group:
            raise ValueError(f"checkpoint group names may not contain '/', got {group!r}")
        for name, t in state.items():
            flat[f"{group}/{name}"] = t.detach().to("cpu").contiguous().clone()
    cfg = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(dict(config))
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(cfg.to_dict()),
        "metrics": json.dumps(metrics or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shards = _shards(flat, max_file_bytes)
    parts = []
    for i, shard in enumerate(shards[1:], start=2):  # parts first: the main file names their hashes
        part = _part_path(path, i)
        _write_atomic(part, shard, {"format": FORMAT + "-part", "of": path.name}, save_file)
        parts.append({"file": part.name, "sha256": file_sha256(part)})
    if parts:
        metadata["parts"] = json.dumps(parts)
    metadata[HASH_KEY] = content_hash(flat, metadata)
    _write_atomic(path, shards[0], metadata, save_file)
    for stale in path.parent.glob(f"{path.stem}.part*{SUFFIX}"):  # from an earlier, larger save
        if _is_part(stale) and stale.name not in {p["file"] for p in parts}:
            stale.unlink()
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        log.warning(
            "%s is %.1f MiB, over the %d MiB per-file budget", path, size / 2**20, MAX_FILE_BYTES // 2**20
        )
    return path


def _write_atomic(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict, save_file, check=None
) -> None:
    """Write via a temp file; `check(tmp)`, if given, runs on the written file before it replaces `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_verify_default = True


def set_verify_default(verify: bool) -> None:
    """What `load_checkpoint(verify=None)` does: the CLI's `--no-verify` turns hash checks off here."""
    global _verify_default
    _verify_default = bool(verify)


def load_checkpoint(
    name_or_path: str | os.PathLike | None = None, *, device: str = "cpu", verify: bool | None = None
) -> LoadedCheckpoint:
    """Read a checkpoint (None: the default one for this machine); errors name the file and the fix.

    Every malformed header, metadata field or tensor is a `UserError`. `verify` (None: the process
    default, on unless `set_verify_default(False)`) checks the content hash and the parts' file hashes.
    """
    verify = _verify_default if verify is None else verify
    if name_or_path is None:
        path = default_checkpoint()
        if path is None:
            raise UserError(
                f"no shipped checkpoint in {checkpoints_dir()}; train one (worldsim train ...) or pass a path"
            )
    else:
        path = resolve_checkpoint(name_or_path)
    meta, flat = _read(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise UserError(f"{path} is a safetensors file but not a worldsim checkpoint (no worldsim metadata)")
    version = meta.get("format_version", "0")
    if not version.isdigit():
        raise UserError(f"{path}: metadata format_version={version[:20]!r} is not an integer; re-export it")
    if int(version) > FORMAT_VERSION:
        raise UserError(
            f"{path} has checkpoint format {version}, newer than this worldsim reads ({FORMAT_VERSION}); "
            f"upgrade worldsim"
        )
    if "parts" in meta:
        flat.update(_load_parts(path, meta["parts"], verify))
    check_hash(path, flat, meta, verify, required=int(version) >= 2)
    config = _parse_config(path, meta["config"])
    metrics = _json_field(path, meta, "metrics", "{}")
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: metadata metrics must be a JSON object, got {type(metrics).__name__}")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        group, _, name = key.partition("/")
        tensors.setdefault(group, {})[name] = t
    check_tensors(path, config, tensors)
    tensors = {g: dequantize_stored(path, g, state) for g, state in tensors.items()}
    if torch.device(device).type != "cpu":
        tensors = {g: {k: t.to(device) for k, t in state.items()} for g, state in tensors.items()}
    return LoadedCheckpoint(config, tensors, metrics, path, file_sha256(path))


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of one safetensors file (on the CPU); unreadable is a UserError."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return meta, load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"{path} is not a readable safetensors checkpoint ({why}); the file is truncated or of another "
            f"format: re-download or re-export it"
        ) from e


def _json_field(path: Path, meta: Mapping[str, str], key: str, default: str):
    try:
        return json.loads(meta.get(key) or default)
    except ValueError as e:
        raise UserError(
            f"{path}: metadata {key} is not valid JSON ({e}); the file is damaged: re-export it"
        ) from e


def _parse_config(path: Path, text: str) -> ModelConfig:
    d = _json_field(path, {"config": text}, "config", "{}")
    try:
        return ModelConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: bad model config in the metadata: {e}") from e


def stamp_content_hash(name_or_path: str | os.PathLike) -> bool:
    """Add the content hash to a checkpoint written before worldsim stored one, changing no tensor.

    The raw tensors and metadata are read with safetensors, the hash of them (parts included) is added
    to the metadata (with `format_version` 2, which requires it) and the file is rewritten atomically; the rewritten file's tensors are compared
    byte for byte with the old ones before it replaces it. Parts stay as they are (the main file's
    hash covers their tensors, its `parts` list their file hashes). False if the file had a hash.
    """
    from safetensors.torch import save_file

    path = resolve_checkpoint(name_or_path)
    load_checkpoint(path, verify=True)  # every structural check passes before we vouch for the file
    meta, own = _read(path)
    if HASH_KEY in meta:
        return False
    flat = {**own, **(_load_parts(path, meta["parts"], True) if "parts" in meta else {})}
    meta["format_version"] = str(FORMAT_VERSION)  # the version that requires the hash
    meta[HASH_KEY] = content_hash(flat, meta)

    def unchanged(tmp: Path) -> None:
        got_meta, got = _read(tmp)
        if got_meta != meta or not same_tensors(got, own):
            raise RuntimeError(f"rewriting {path} changed its tensors or metadata; left it as it was")

    _write_atomic(path, own, meta, save_file, check=unchanged)
    return True


def _load_parts(path: Path, parts_json: str, verify: bool) -> dict[str, torch.Tensor]:
    """The tensors of a sharded checkpoint's parts, each checked against the hash the main file holds."""
    parts = _json_field(path, {"parts": parts_json}, "parts", "[]")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise UserError(f"{path}: metadata parts must be a JSON list of objects; re-export the checkpoint")
    flat: dict[str, torch.Tensor] = {}
    # Parts are found by number beside the main file (not by the name they were written under), so a
    # model renamed with its parts stays whole.
    for i, part in enumerate(parts, start=2):
        p = _part_path(path, i)
        if not p.is_file():
            raise UserError(
                f"{path} is stored in parts and {p.name} is missing beside it; copy every "
                f"{path.stem}.part*{SUFFIX} file along with it"
            )
        if verify and file_sha256(p) != part.get("sha256"):
            raise UserError(
                f"{p} does not match the hash {path.name} records for it (truncated, or from another "
                f"export); copy the parts written together with {path.name}"
            )
        part_meta, tensors = _read(p)
        if part_meta.get("format") != FORMAT + "-part" or set(tensors) & set(flat):
            raise UserError(f"{p} is not a part of a worldsim checkpoint; re-export the checkpoint")
        flat.update(tensors)
    return flat


def load_module(module: nn.Module, ckpt: LoadedCheckpoint, group: str) -> nn.Module:
    """Load group `group` of `ckpt` into `module` strictly, with an actionable error on any mismatch."""
    if group not in ckpt.tensors:
        raise UserError(
            f"{ckpt.path} has no {group!r} tensors (groups: {sorted(ckpt.tensors)}); re-export the checkpoint"
        )
    state = ckpt.tensors[group]
    diff = mismatch({k: tuple(v.shape) for k, v in state.items()},
                    {k: tuple(v.shape) for k, v in module.state_dict().items()})  # fmt: skip
    if diff:
        raise UserError(
            f"{ckpt.path}: the {group!r} weights do not fit the model its config describes "
            f"({diff}); the file was written by other code: re-export it"
        )
    module.load_state_dict(state)
    return module
