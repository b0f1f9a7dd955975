"""`worldsim bench game|neural|serve|train`: each target parses its own flags and runs on CPU for a
fraction of a second; the old one-list spelling still runs, with a warning; the comparison benches draw
a PNG beside their JSON; printed figures are rounded."""

import json
import re

import pytest

from worldsim.bench import train as bench_train
from worldsim.cli import build_parser, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG_DECIMAL = re.compile(r"\d\.\d{5,}")  # "144.16503272647608": a figure printed unrounded


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "game", "--sessions", "2"],  # a neural flag
        ["bench", "game", "--clients", "2"],  # a serve flag
        ["bench", "train", "--checkpoint", "tiny"],
        ["bench", "neural", "--preset", "test"],  # a train flag
        ["bench", "serve", "--compare"],
    ],
)
def test_a_target_refuses_the_flags_of_another(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_each_target_parses_its_own_flags():
    p = build_parser()
    assert p.parse_args(["bench", "game", "--size", "32", "--batch", "2"]).target == "game"
    args = p.parse_args(["bench", "neural", "--sessions", "3", "--dtype", "both", "--no-verify"])
    assert (args.target, args.sessions, args.dtype, args.no_verify) == ("neural", 3, "both", True)
    args = p.parse_args(["bench", "serve", "--world", "neural", "--clients", "8"])
    assert (args.target, args.world, args.clients) == ("serve", "neural", 8)
    args = p.parse_args(["bench", "train", "--preset", "test", "--source", "live", "--compile"])
    assert (args.target, args.preset, args.source, args.compile, args.batch) == (
        "train",
        "test",
        "live",
        True,
        None,
    )


def test_bench_game_runs_and_prints_rounded_figures(tmp_path, capsys):
    out = tmp_path / "game.json"
    assert (
        main(["bench", "game", "--size", "16", "--seconds", "0.2", "--device", "cpu", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "frames/s" in printed and not LONG_DECIMAL.search(printed), printed
    r = json.loads(out.read_text())
    assert r["fps"] > 0 and r["size"] == 16 and r["batch"] == 1


@pytest.mark.parametrize(
    "old, new",
    [
        (["--world", "game"], "worldsim bench game"),
        ([], "worldsim bench game"),  # the old default
    ],
)
def test_the_old_spelling_still_runs_with_a_warning(old, new, caplog, capsys):
    assert main(["bench", *old, "--size", "16", "--seconds", "0.2", "--device", "cpu"]) == 0
    assert "frames/s" in capsys.readouterr().out
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("deprecated" in m and f"use `{new}`" in m for m in warned), warned


@pytest.mark.parametrize(
    "old, target, new",
    [
        (["--world", "neural", "--sessions", "2"], "neural", "worldsim bench neural"),
        (["--serve", "--world", "neural"], "serve", "worldsim bench serve --world neural"),
        (["--serve", "--clients", "2"], "serve", "worldsim bench serve"),
        (["--train", "--preset", "test"], "train", "worldsim bench train"),
    ],
)
def test_the_old_spelling_names_its_target_and_the_new_form(old, target, new, caplog):
    from worldsim.cli.bench import old_spelling_target

    args = build_parser().parse_args(["bench", *old])
    assert args.target is None and old_spelling_target(args) == target
    assert f"use `{new}`" in caplog.records[-1].getMessage()


def test_bench_neural_runs(tmp_path, capsys):
    out = tmp_path / "n.json"
    argv = ["bench", "neural", "--quick", "--device", "cpu", "--seconds", "0.2", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "frames/s" in printed and not LONG_DECIMAL.search(printed), printed
    assert json.loads(out.read_text())["fps"] > 0
    assert not out.with_suffix(".png").exists()  # one configuration: nothing to compare


def test_bench_serve_runs(tmp_path, capsys):
    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "--size", "16", "--clients", "1", "--seconds", "0.5", "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["clients"][0]["frames"] > 0
    assert not LONG_DECIMAL.search(capsys.readouterr().out)


def test_bench_train_compare_writes_a_chart_beside_its_json(tmp_path, monkeypatch, capsys):
    # the CPU's compare list compiles the DiT (minutes); its two eager variants are compared here
    monkeypatch.setattr(
        bench_train,
        "compare_variants",
        lambda device: [bench_train.Variant("live"), bench_train.Variant("store")],
    )
    out = tmp_path / "train.json"
    argv = ["bench", "train", "--compare", "--preset", "test", "--device", "cpu", "--batch", "2",
            "--seconds", "0.1", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(out.read_text())["best"] == "store+eager+sdpa"
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000  # two labelled bars, not an empty canvas
    assert not LONG_DECIMAL.search(capsys.readouterr().out)


def test_bench_cli_prints_the_help_time_and_that_no_torch_loaded(capsys):
    assert main(["bench", "cli", "--runs", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("worldsim --help: median ") and line.endswith("torch loaded: False"), line
