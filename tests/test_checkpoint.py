"""Checkpoint IO: safetensors with config + metrics metadata, atomic writes, name resolution, errors."""

import hashlib
import json
import struct

import pytest
import torch

import worldsim.checkpoint as ck
from worldsim.checkpoint_check import HASH_KEY
from worldsim.errors import UserError
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    d.mkdir()
    monkeypatch.setattr(ck, "checkpoints_dir", lambda: d)
    return d


def _save(path, cfg=None, **kw):
    cfg = cfg or get_preset("test")
    torch.manual_seed(0)
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    return ck.save_checkpoint(
        path, config=cfg, tensors={"dit": dit.state_dict(), "autoencoder": ae.state_dict()}, **kw
    ), dit


def test_roundtrip(tmp_path):
    cfg = get_preset("test")
    z = torch.randn(3, cfg.latent_channels, *cfg.latent_hw)
    path, dit = _save(tmp_path / "m.safetensors", metrics={"psnr": {"1": 25.0}})
    ck.save_checkpoint(path, config=cfg, dit=dit.state_dict(), start_latents=z, metrics={"a": 1})
    got = ck.load_checkpoint(path)
    assert got.config == cfg and got.metrics == {"a": 1} and got.path == path
    assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.testing.assert_close(got.tensors["start"]["latents"], z)
    fresh = ck.load_module(DiT(cfg), got, "dit")
    for k, v in dit.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_names_resolve_and_default_prefers_the_device(shipped):
    assert ck.default_checkpoint("cpu") is None
    for name in ("tiny", "breakout"):
        _save(shipped / f"{name}.safetensors")
    assert ck.resolve_checkpoint("tiny") == shipped / "tiny.safetensors"
    assert ck.default_checkpoint("cpu") == shipped / "tiny.safetensors"  # another game's is never a default
    assert ck.default_checkpoint("cuda") == shipped / "tiny.safetensors"
    _save(shipped / "tiny-student.safetensors")  # measured best on both (PREFERENCE's comment)
    assert ck.default_checkpoint("cpu") == shipped / "tiny-student.safetensors"
    assert ck.default_checkpoint("cuda") == shipped / "tiny-student.safetensors"
    with pytest.raises(UserError, match=r"no checkpoint named 'nope'.*breakout, tiny, tiny-student"):
        ck.resolve_checkpoint("nope")
    with pytest.raises(UserError, match="does not exist"):
        ck.resolve_checkpoint(shipped / "missing.safetensors")


def test_bad_files_give_actionable_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(UserError, match="junk.safetensors is not a readable safetensors"):
        ck.load_checkpoint(junk)
    path, _ = _save(tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated"):
        ck.load_checkpoint(cut)


def _rewrite_metadata(path, out, **changes):
    """A copy with changed metadata and no content hash (a version-1 file, written before there was
    one), so the check under test is reached rather than the hash's."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].pop(HASH_KEY)
    header["__metadata__"].update({"format_version": "1", **changes})  # 1: before hashes were required
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    out.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    return out


def test_newer_versions_and_mismatched_weights_are_refused(tmp_path):
    path, _ = _save(tmp_path / "m.safetensors")
    newer = _rewrite_metadata(path, tmp_path / "newer.safetensors", format_version="7")
    with pytest.raises(UserError, match="newer than this worldsim"):
        ck.load_checkpoint(newer)
    cfg = json.loads(json.dumps(get_preset("test").to_dict()))
    cfg["version"] = 42
    newcfg = _rewrite_metadata(path, tmp_path / "newcfg.safetensors", config=json.dumps(cfg))
    with pytest.raises(UserError, match="upgrade worldsim"):
        ck.load_checkpoint(newcfg)
    got = ck.load_checkpoint(path)
    with pytest.raises(UserError, match="shape mismatch"):
        ck.load_module(DiT(get_preset("test").replace(width=64)), got, "dit")
    del got.tensors["dit"]["final.linear.weight"]
    with pytest.raises(UserError, match=r"missing tensors \['final.linear.weight'\]"):
        ck.load_module(DiT(get_preset("test")), got, "dit")
    with pytest.raises(UserError, match="no 'start' tensors"):
        ck.load_module(DiT(get_preset("test")), got, "start")


def test_a_checkpoint_over_the_file_budget_is_written_in_parts_and_read_whole(tmp_path):
    cfg = get_preset("test")
    dit = DiT(cfg)
    z = torch.randn(3, cfg.latent_channels, *cfg.latent_hw)
    total = sum(t.numel() * t.element_size() for t in dit.state_dict().values())
    limit = total // 3 + (64 << 10)
    path = ck.save_checkpoint(
        tmp_path / "m.safetensors", config=cfg, dit=dit.state_dict(), start_latents=z, max_file_bytes=limit
    )
    files = sorted((p.name for p in tmp_path.iterdir()), key=lambda f: (".part" in f, f))
    assert files[0] == "m.safetensors" and len(files) >= 3 and all(".part" in f for f in files[1:])
    assert all((tmp_path / f).stat().st_size <= limit for f in files)
    got = ck.load_checkpoint(path)
    for k, v in dit.state_dict().items():
        torch.testing.assert_close(got.tensors["dit"][k], v)
    torch.testing.assert_close(got.tensors["start"]["latents"], z)
    # renamed together (a model copied under another name), the files still load whole
    renamed = tmp_path / "other"
    renamed.mkdir()
    for f in files:
        (renamed / f.replace("m.", "n.", 1)).write_bytes((tmp_path / f).read_bytes())
    torch.testing.assert_close(ck.load_checkpoint(renamed / "n.safetensors").tensors["start"]["latents"], z)
    # a part that is truncated, or gone, is named in the error; nothing is half-loaded
    part = tmp_path / files[1]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"{files[1]} does not match the hash"):
        ck.load_checkpoint(path)
    part.unlink()
    with pytest.raises(UserError, match=rf"{files[1]} is missing"):
        ck.load_checkpoint(path)
    # saving again under the budget leaves one file and no stale parts
    ck.save_checkpoint(path, config=cfg, dit=dit.state_dict(), max_file_bytes=None)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["m.safetensors"]


def test_parts_are_not_listed_as_checkpoints(shipped):
    cfg = get_preset("test")
    total = sum(t.numel() * t.element_size() for t in DiT(cfg).state_dict().values())
    ck.save_checkpoint(
        shipped / "big.safetensors", config=cfg, dit=DiT(cfg).state_dict(), max_file_bytes=total // 2
    )
    assert ck.shipped_checkpoints() == ["big"]
    assert ck.load_checkpoint("big").config == cfg


def test_the_shipped_checkpoints_load_have_cards_and_keep_the_budget():
    """docs/design.md §4: checkpoints/ holds <= 40 MiB of safetensors, no file over 16 MiB, a card per model;
    every model loads whole (its parts' hashes checked)."""
    d = ck.checkpoints_dir()
    files = sorted(d.glob("*.safetensors"))
    assert sum(f.stat().st_size for f in files) <= 40 * 2**20
    assert all(f.stat().st_size <= ck.MAX_FILE_BYTES for f in files)
    names = ck.shipped_checkpoints()
    assert {"tiny", "tiny-student", "breakout"} <= set(names)
    for name in names:
        assert (d / f"{name}.md").is_file(), f"{name} has no card"
        got = ck.load_checkpoint(name)
        assert "dit" in got.tensors and "autoencoder" in got.tensors
        assert all(t.dtype != torch.int8 for t in got.tensors["autoencoder"].values()), "read back as floats"
