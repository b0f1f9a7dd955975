"""A generated corpus of damaged checkpoints: every copy is refused with a one-line UserError.

The original is an 8-bit export of the `test` preset (int8 DiT linears with `.scale`, int8 autoencoder
kernels with `.q8scale`, bf16 matrices, fp32 vectors and start latents), once as one file and once in
parts. Damage: random bit flips in the header and in the data, truncations, relabelled dtypes, permuted
shapes, bad metadata JSON, bad config fields, NaN weights and scales, zeroed weights, a swapped part.
Header edits come in three forms: with the old content hash kept (the hash must catch them), with the
hash dropped (format 2 requires it), and as a version-1 file, written before hashes were stored (the
structural checks must catch them); NaN and relabelled tensors also with a recomputed hash (a forger's
copy: the value checks must catch it). safetensors writes the metadata in a per-process order, so the
random flips land on other fields from run to run; every single-bit flip of the header of this export
was once checked exhaustively (none loads), so any run's sample must pass.

Excluded, and counted: a copy whose damage provably changes nothing, i.e. safetensors reads back the
same metadata and the same tensors (names, dtypes, shapes and bytes) as from the original. In practice
no single bit flip does that (safetensors writes no JSON whitespace but the trailing padding, and every
flip of a padding space gives a character JSON refuses), so the test also asserts that at most a few
copies are excluded. Not in the corpus: a hashless file whose tensor values were changed to other finite
values (zeroed weights, flipped mantissas): without a hash nothing can tell them from a real model, which
is why the shipped files carry one (a file without it loads with a log line saying so).
"""

import json
import random
import struct
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import worldsim.checkpoint as ck
from worldsim.checkpoint_check import HASH_KEY, content_hash, same_tensors
from worldsim.engine.quant import int8_tensors, quantize_int8
from worldsim.errors import UserError
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.storage8 import quantize_stored

SAME_SIZE = {"BF16": ["F16", "I16", "U16"], "F32": ["I32", "U32"], "I8": ["U8", "BOOL", "F8_E4M3"]}


def _export(path, max_file_bytes=None):
    cfg = get_preset("test")
    torch.manual_seed(0)
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ae_state = {k: v.to(torch.bfloat16) if v.ndim >= 2 else v for k, v in ae.state_dict().items()}
    start = torch.randn(4, cfg.latent_channels, *cfg.latent_hw)
    return ck.save_checkpoint(
        path, config=cfg, dit=int8_tensors(quantize_int8(dit)),
        autoencoder=quantize_stored(ae_state, min_numel=256), start_latents=start,
        max_file_bytes=max_file_bytes,
    )  # fmt: skip


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict, data: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def _restamped(raw: bytes, tmp) -> bytes:
    """The copy with its content hash recomputed over what it now holds (what a forger would do)."""
    tmp.write_bytes(raw)
    header, data = _split(raw)
    header["__metadata__"][HASH_KEY] = content_hash(load_file(str(tmp)), header["__metadata__"])
    return _join(header, data)


def _legacy(meta: dict) -> dict:
    """Metadata as a version-1 file (before content hashes) has it."""
    return {**{k: v for k, v in meta.items() if k != HASH_KEY}, "format_version": "1"}


def _header_edits(raw: bytes):
    """(label, edited header) for relabelled dtypes, permuted shapes, bad metadata and bad config."""
    header, _ = _split(raw)
    names = sorted(k for k in header if k != "__metadata__")
    for name in names:
        for new in SAME_SIZE.get(header[name]["dtype"], [])[: 1 if not name.startswith("start") else 3]:
            h = json.loads(json.dumps(header))
            h[name]["dtype"] = new
            yield f"dtype {name} {header[name]['dtype']}->{new}", h
    for name in names:
        shape = header[name]["shape"]
        if len(set(shape)) > 1:
            h = json.loads(json.dumps(header))
            h[name]["shape"] = shape[::-1]
            yield f"shape {name} {shape}->{shape[::-1]}", h
    if "config" not in header["__metadata__"]:
        return  # a part: its metadata only names the main file (covered by the part's file hash)
    meta_edits = {
        "format_version": ["abc", "", "-1", "1.0", "99"], "metrics": ["{oops", "[]", "7"],
        "config": ["[]", "{oops", "null", '"tiny"', "{}"], "format": ["safetensors"],
    }  # fmt: skip
    for key, values in meta_edits.items():
        for v in values:
            h = json.loads(json.dumps(header))
            h["__metadata__"][key] = v
            yield f"metadata {key}={v!r}", h
    cfg = json.loads(header["__metadata__"]["config"])
    bad = {
        "heads": [0, -2, 3, "2"], "depth": [4000, 0, 2.5, None, True], "width": [-32, 10**9, 64],
        "window": [0, 10**6], "patch_size": [0, 3], "key_names": [[], "abc", ["a", "a"], [1]],
        "mlp_ratio": [float("nan"), float("inf"), 0, 1e9], "steps": [0, 10**9], "sinks": [-1, 100],
        "autoencoder": [[], None, {"image_size": 10**6}, {"image_size": [32]}, {"latent_channels": 5}],
        "attention": ["magic"], "version": [99, "1"], "nonsense": [1], "context_noise": [1.5],
    }  # fmt: skip
    for key, values in bad.items():
        for v in values:
            c = json.loads(json.dumps(cfg))
            c[key] = {**c[key], **v} if isinstance(v, dict) else v
            h = json.loads(json.dumps(header))
            h["__metadata__"]["config"] = json.dumps(c)
            yield f"config {key}={v!r}", h


def _tensor_edits(path):
    """(label, tensors) with NaN, infinite or zeroed values (only where that changes the tensor)."""
    flat = load_file(str(path))
    scales = [k for k in sorted(flat) if k.endswith((".scale", ".q8scale"))]
    floats = [k for k in sorted(flat) if flat[k].is_floating_point() and flat[k].abs().min() > 0]
    edits = []
    for k in (
        scales[:3] + [k for k in floats if k not in scales][:3] + [k for k in flat if k.startswith("start/")]
    ):
        for label, value in (("NaN", float("nan")), ("inf", float("inf")), ("zeroed", 0.0)):
            t = flat[k].clone()
            t.view(-1)[0] = value
            edits.append((f"{label} {k}", k, t))
    for k in [k for k in sorted(flat) if k.startswith("autoencoder/") and flat[k].ndim >= 2][:3]:
        edits.append((f"zeroed {k}", k, torch.zeros_like(flat[k])))
    for label, k, t in edits:
        if not torch.equal(t, flat[k]):
            yield label, {**flat, k: t}


def _corpus(path, tmp, rng):
    """(label, file name, bytes) of every damaged copy of `path` (and of its first part, if any)."""
    raw = path.read_bytes()
    header, data = _split(raw)
    hlen = len(raw) - len(data)
    for pos in rng.sample(range(hlen), min(hlen, 120)):
        b = bytearray(raw)
        b[pos] ^= 1 << rng.randrange(8)
        yield f"header flip @{pos}", path.name, bytes(b)
    for pos in rng.sample(range(hlen, len(raw)), 120):
        b = bytearray(raw)
        b[pos] ^= 1 << rng.randrange(8)
        yield f"data flip @{pos}", path.name, bytes(b)
    for n in [0, 7, 8, 9, hlen - 1, hlen, hlen + 1, len(raw) - 1] + rng.sample(range(len(raw)), 12):
        yield f"truncated to {n}", path.name, raw[:n]
    for label, h in _header_edits(raw):
        yield f"{label} (hash kept)", path.name, _join(h, data)
        if "config" not in h["__metadata__"]:
            continue  # a part: it holds no hash of its own
        h["__metadata__"].pop(HASH_KEY, None)
        yield f"{label} (hash dropped)", path.name, _join(h, data)
        if not label.startswith("metadata format_version"):
            h["__metadata__"]["format_version"] = "1"
        yield f"{label} (no hash, version 1)", path.name, _join(h, data)
        if label.startswith(("dtype", "shape start")):
            yield f"{label} (hash recomputed)", path.name, _restamped(_join(h, data), tmp)
    meta = {k: v for k, v in header["__metadata__"].items()}
    for label, tensors in _tensor_edits(path):
        save_file(tensors, str(tmp), metadata=meta)
        yield f"{label} (hash kept)", path.name, tmp.read_bytes()
        if not label.startswith("zeroed"):  # zeros with a matching hash are a valid (if useless) model
            yield f"{label} (hash recomputed)", path.name, _restamped(tmp.read_bytes(), tmp)
            if HASH_KEY in meta:  # the main file, as a version-1 file without a hash
                save_file(tensors, str(tmp), metadata={**_legacy(meta)})
                yield f"{label} (no hash, version 1)", path.name, tmp.read_bytes()


def _same_content(a, b) -> bool:
    """Does safetensors read the same metadata and tensors from both files? (The exclusion rule.)"""
    try:
        with safe_open(str(a), "pt") as f, safe_open(str(b), "pt") as g:
            if f.metadata() != g.metadata():
                return False
        ta, tb = load_file(str(a)), load_file(str(b))
    except Exception:
        return False
    return same_tensors(ta, tb)


def _attack(original, copies, workdir):
    """Load every copy in `workdir` (beside the original's other files); tally the outcomes."""
    outcome = {"refused": 0, "excluded": [], "traceback": [], "silent": [], "multiline": []}
    for label, name, data in copies:
        target = workdir / name
        target.write_bytes(data)
        main = workdir / original.name
        try:
            ck.load_checkpoint(main)
        except UserError as e:
            outcome["refused"] += 1
            if "\n" in str(e):
                outcome["multiline"].append(label)
        except Exception as e:  # noqa: BLE001 - what the test counts
            outcome["traceback"].append(f"{label}: {type(e).__name__}: {e}")
        else:
            if _same_content(target, original.parent / name):
                outcome["excluded"].append(label)
            else:
                outcome["silent"].append(label)
        target.write_bytes((original.parent / name).read_bytes())  # restore for the next copy
    return outcome


@pytest.mark.parametrize("sharded", [False, True])
def test_every_damaged_copy_is_refused_with_one_line(tmp_path, sharded):
    src = tmp_path / "src"
    src.mkdir()
    path = _export(src / "m.safetensors")
    if sharded:  # the same export in a main file and parts (save_checkpoint keeps 64 KiB for headers)
        path = _export(src / "m.safetensors", max_file_bytes=(64 << 10) + path.stat().st_size // 2)
    files = sorted(p.name for p in src.iterdir())
    assert len(files) == (2 if sharded else 1), files
    ck.load_checkpoint(path)  # the original loads
    work = tmp_path / "work"
    work.mkdir()
    for f in files:
        (work / f).write_bytes((src / f).read_bytes())
    rng = random.Random(16)
    copies = list(_corpus(path, tmp_path / "scratch.safetensors", rng))
    if sharded:
        part = src / "m.part2.safetensors"
        copies += [(lb, part.name, d) for lb, _, d in _corpus(part, tmp_path / "scratch.safetensors", rng)]
        copies.append(("part swapped for another export's", part.name, path.read_bytes()))
    out = _attack(path, copies, work)
    assert out["traceback"] == [], out["traceback"][:5]
    assert out["silent"] == [], out["silent"][:10]
    assert out["multiline"] == []
    assert out["refused"] + len(out["excluded"]) == len(copies) > 500
    assert len(out["excluded"]) <= 2, out["excluded"]


def test_verify_false_skips_only_the_hashes(tmp_path):
    path = _export(tmp_path / "m.safetensors")
    flat = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    k = next(k for k in sorted(flat) if k.startswith("autoencoder/") and k.endswith(".weight")
             and flat[k].dtype == torch.bfloat16)  # fmt: skip
    edited = tmp_path / "edited.safetensors"
    save_file({**flat, k: flat[k] * 0.5}, str(edited), metadata=meta)  # edited on purpose, hash kept
    with pytest.raises(UserError, match="is damaged.*--no-verify"):
        ck.load_checkpoint(edited)
    got = ck.load_checkpoint(edited, verify=False)
    torch.testing.assert_close(got.tensors["autoencoder"][k.partition("/")[2]], flat[k] * 0.5)
    flat[k] = flat[k].clone()
    flat[k].view(-1)[0] = float("nan")
    save_file(flat, str(edited), metadata=meta)
    with pytest.raises(UserError, match="NaN or infinite"):
        ck.load_checkpoint(edited, verify=False)  # the value checks still run


def test_a_file_without_a_hash_loads_and_says_so(tmp_path, caplog):
    path = _export(tmp_path / "m.safetensors")
    header, data = _split(path.read_bytes())
    exported_hash = header["__metadata__"][HASH_KEY]
    header["__metadata__"] = _legacy(header["__metadata__"])
    old = tmp_path / "old.safetensors"
    old.write_bytes(_join(header, data))
    with caplog.at_level("INFO", logger="worldsim.checkpoint_check"):
        got = ck.load_checkpoint(old)
    assert "carries no content hash" in caplog.text and got.config == get_preset("test")
    header["__metadata__"]["format_version"] = "2"  # format 2 without its hash: damaged
    dropped = tmp_path / "dropped.safetensors"
    dropped.write_bytes(_join(header, data))
    with pytest.raises(UserError, match="requires a content hash"):
        ck.load_checkpoint(dropped)
    # stamping adds the hash and nothing else: the same tensors, byte for byte, then a damaged copy fails
    assert ck.stamp_content_hash(old) and not ck.stamp_content_hash(old)
    assert same_tensors(load_file(str(old)), load_file(str(path)))
    with safe_open(str(old), "pt") as f:
        assert f.metadata()[HASH_KEY] == exported_hash  # the hash export wrote, recomputed
    raw = bytearray(old.read_bytes())
    raw[-3] ^= 4
    old.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="is damaged"):
        ck.load_checkpoint(old)


def test_shipped_checkpoints_carry_a_content_hash():
    for name in ck.shipped_checkpoints():
        with safe_open(str(ck.resolve_checkpoint(name)), "pt") as f:
            assert HASH_KEY in f.metadata(), f"{name}: run scripts/stamp_checkpoints.py"


def test_eval_quick_on_a_damaged_file_exits_2_with_one_line(tmp_path):
    path = _export(tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 16
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    r = subprocess.run(
        [sys.executable, "-m", "worldsim", "eval", "--quick", "--device", "cpu", "--checkpoint", str(bad),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is damaged" in lines[0] and "Traceback" not in r.stderr


def test_no_verify_on_every_verb_that_loads_checkpoints(tmp_path):
    from worldsim.cli import build_parser
    from worldsim.cli.options import checkpoint_verification

    path = _export(tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1  # one bit of the data (a finite value still): the hash refuses it, --no-verify loads it
    path.write_bytes(bytes(raw))
    parser = build_parser()
    for verb in ("play", "eval", "serve", "bench"):
        args = parser.parse_args([verb, "--no-verify"])
        with checkpoint_verification(args):
            assert ck.load_checkpoint(path).config == get_preset("test")
        with pytest.raises(UserError, match="is damaged"):  # on again once the verb is done
            ck.load_checkpoint(path)
        with checkpoint_verification(parser.parse_args([verb])), pytest.raises(UserError, match="is damaged"):
            ck.load_checkpoint(path)
