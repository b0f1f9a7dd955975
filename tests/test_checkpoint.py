"""Checkpoint IO: safetensors with config + metrics metadata, atomic writes, name resolution, errors."""

import hashlib
import json
import struct

import pytest
import torch

import worldsim.checkpoint as ck
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
    for name in ("tiny", "base"):
        _save(shipped / f"{name}.safetensors")
    assert ck.resolve_checkpoint("tiny") == shipped / "tiny.safetensors"
    assert ck.default_checkpoint("cpu") == shipped / "tiny.safetensors"
    assert ck.default_checkpoint("cuda") == shipped / "base.safetensors"
    _save(shipped / "tiny-student.safetensors")
    assert ck.default_checkpoint("cpu") == shipped / "tiny-student.safetensors"
    _save(shipped / "tiny-student-1step.safetensors")
    assert ck.default_checkpoint("cpu") == shipped / "tiny-student-1step.safetensors"  # the fast one
    assert ck.default_checkpoint("cuda") == shipped / "base.safetensors"
    (shipped / "base.safetensors").unlink()
    assert ck.default_checkpoint("cuda") == shipped / "tiny-student.safetensors"  # the better one
    with pytest.raises(
        UserError, match=r"no checkpoint named 'nope'.*tiny, tiny-student, tiny-student-1step"
    ):
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
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update(changes)
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
