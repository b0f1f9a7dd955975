"""`worldsim bench neural`: the single run and the `--compare --quick` table, on CPU."""

import argparse
import json

import pytest
import torch

from worldsim.bench import neural as bench
from worldsim.errors import UserError


def _args(**kw):
    base = dict(
        world="neural", checkpoint=None, device="cpu", sessions=1, seconds=0.2, compare=False, json=None,
        quick=True, eager=False,
    )  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


def test_single_run_writes_fps_and_latency(tmp_path, capsys):
    out = tmp_path / "n.json"
    assert bench.run(_args(sessions=2, json=str(out))) == 0
    r = json.loads(out.read_text())
    assert r["fps"] > 0 and r["sessions"] == 2 and r["mode"] == "eager" and r["device"] == "cpu"
    assert 0 < r["ms_p50"] <= r["ms_p99"]
    assert r["fps"] == pytest.approx(2 * r["fps_per_session"])
    assert "frames/s" in capsys.readouterr().out


def test_compare_quick_covers_sessions_and_anchors(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert (
        bench.main(["--compare", "--quick", "--device", "cpu", "--seconds", "0.1", "--json", str(out)]) == 0
    )
    r = json.loads(out.read_text())
    rows = r["rows"]
    assert {(x["model"], x["sessions"]) for x in rows} >= {("test (random)", 1), ("test (random)", 2)}
    anchors = [x for x in rows if "video_fps" in x]
    assert {x["model"] for x in anchors} == {"matrix-game-2 (quick)", "self-forcing (quick)"}
    for x in anchors:  # a block is 3 latent frames; the table's video rate is 4 per latent frame
        assert x["block_frames"] == 3 and x["video_fps"] == pytest.approx(4 * x["fps"])
    assert all(x["fps"] > 0 and x["vs_eager"] == 1.0 for x in rows)  # CPU: eager rows only
    table = capsys.readouterr().out
    assert "self-forcing (quick)" in table and "x eager" in table
    png = out.with_suffix(".png").read_bytes()  # the bar chart beside the JSON
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="--sessions"):
        bench.run(_args(sessions=0))


def test_cli_times_a_checkpoint(tmp_path, capsys):
    """`worldsim bench --world neural --checkpoint PATH --json FILE` through the real CLI parser."""
    from worldsim.checkpoint import save_checkpoint
    from worldsim.cli import main
    from worldsim.model import DiT, get_preset
    from worldsim.model.autoencoder import Autoencoder

    cfg = get_preset("test")
    start = torch.randn(2, 1, cfg.latent_channels, *cfg.latent_hw)
    ckpt = save_checkpoint(
        tmp_path / "b.safetensors", config=cfg, dit=DiT(cfg).state_dict(),
        autoencoder=Autoencoder(cfg.autoencoder).state_dict(), start_latents=start,
    )  # fmt: skip
    out = tmp_path / "b.json"
    argv = ["bench", "--world", "neural", "--checkpoint", str(ckpt), "--device", "cpu", "--sessions", "3"]
    assert main([*argv, "--seconds", "0.2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "b" and r["sessions"] == 3 and r["fps"] > 0 and r["mode"] == "eager"
    assert "\nb " in capsys.readouterr().out  # the table row
