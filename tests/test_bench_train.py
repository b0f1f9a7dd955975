"""`worldsim bench --train` on the test preset on CPU (eager only: compiling on a CPU takes minutes), and the
FLOP count behind its MFU against a count taken from the model's own layers and attention masks."""

import json

import pytest
import torch
from torch import nn

from worldsim.bench.train import PARTS, Variant, dit_forward_flops, format_table, measure, summarize
from worldsim.cli import main as cli_main
from worldsim.model import DiT, get_preset
from worldsim.model.attention import sequence_mask

CPU = torch.device("cpu")


def test_bench_train_writes_the_json_keys(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--train", "--preset", "test", "--device", "cpu", "--batch", "2", "--seconds", "0.1",
            "--source", "live", "--json", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "live+eager+sdpa" in printed and "clips/s" in printed
    result = json.loads(out.read_text())
    assert result["clips_per_second"] > 0 and "ratio" not in result and "mfu" not in result  # MFU: CUDA only
    assert set(result["parts_ms"]) == set(PARTS) == {"data", "encode", "forward_backward", "optimizer"}
    assert all(v >= 0 for v in result["parts_ms"].values()) and result["parts_ms"]["forward_backward"] > 0
    (row,) = result["rows"]
    assert row["preset"] == "test" and row["batch"] == 2 and row["steps"] >= 3


def test_two_variants_give_a_ratio_over_the_first():
    kw = dict(preset="test", batch=2, seconds=0.1, device=CPU)
    rows = [measure(Variant("live"), **kw), measure(Variant("store"), **kw)]
    store = rows[1]
    assert store["store_fill_seconds"] > 0 and store["parts_ms"]["encode"] < rows[0]["parts_ms"]["encode"]
    result = summarize(rows, CPU)
    assert result["best"] == "store+eager+sdpa"
    assert result["ratio"] == pytest.approx(store["clips_per_second"] / rows[0]["clips_per_second"], rel=1e-2)
    assert result["clips_per_second"] == store["clips_per_second"] and result["parts_ms"] == store["parts_ms"]
    table = format_table(rows).splitlines()
    assert table[2].split()[:3] == ["live+eager+sdpa", f"{rows[0]['clips_per_second']:.1f}", "1.00x"]


# the linears applied to every token (the time and key embeddings and the modulations run once a frame)
BLOCK_PER_TOKEN = ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")


def _per_token(name: str) -> bool:
    return name in ("patch_in", "final.linear") or (
        name.startswith("blocks.") and name.endswith(BLOCK_PER_TOKEN)
    )


def _hand_count(cfg, frames: int) -> float:
    """2 x multiply-adds: every per-token linear layer of the built model (its weight shapes) on
    frames x N tokens, plus q.k and p.v over the (query, key) token pairs each layer's real mask allows."""
    model = DiT(cfg)
    linears = [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and _per_token(name)]
    assert len(linears) == 4 * cfg.depth + 2
    macs = sum(m.in_features * m.out_features for m in linears)
    linear = 2 * macs * frames * cfg.tokens_per_frame
    attn = 0
    for layer in range(cfg.depth):
        mask = sequence_mask(frames, cfg.tokens_per_frame, sinks=cfg.sinks, block_frames=cfg.block_frames,
                             window=cfg.layer_window(layer))  # fmt: skip
        attn += 2 * 2 * int(mask.sum()) * cfg.width  # q.k, then p.v: D multiply-adds per visible pair each
    return linear + attn


@pytest.mark.parametrize(
    "changes, frames",
    [
        ({}, 7),  # window 4, one sink: the window slides inside the clip
        ({"block_frames": 2, "window": 4, "sinks": 0}, 8),  # blocks of 2 frames see each other
        ({"window": 6, "local_window": 2, "global_every": 2, "depth": 4}, 9),  # sparse: local + global layers
    ],
)
def test_dit_forward_flops_matches_a_hand_count(changes, frames):
    cfg = get_preset("test").replace(**changes)
    assert dit_forward_flops(cfg, frames) == _hand_count(cfg, frames)


@pytest.mark.parametrize("flag, value", [("--seconds", "0"), ("--batch", "0"), ("--batch", "-1")])
def test_bench_train_bad_sizes_are_one_line_errors(flag, value, capsys):
    assert cli_main(["bench", "--train", "--preset", "test", "--device", "cpu", flag, value]) == 2
    err = capsys.readouterr().err
    assert "--seconds > 0 and --batch >= 1" in err and "Traceback" not in err


def test_bench_train_unknown_preset_is_a_one_line_error(capsys):
    assert cli_main(["bench", "--train", "--preset", "huge", "--device", "cpu", "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--preset: unknown model preset 'huge'" in err and "Traceback" not in err
