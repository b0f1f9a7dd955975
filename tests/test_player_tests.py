"""scripts/player_tests.py: the situations a player tries first, with every model side by side."""

import importlib.util
import json
from pathlib import Path

import torch
from models import random_checkpoint

from worldsim.game import GameWorld
from worldsim.metrics import psnr

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "player_tests.py"
spec = importlib.util.spec_from_file_location("player_tests", SCRIPT)
pt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pt)


def real_views(situation: str, frames: int, seed: int = 0) -> torch.Tensor:
    game = GameWorld(batch_size=1, size=(64, 64))
    start = game.reset([seed])
    keys = pt.keys_for(situation, frames)
    return start, torch.stack([game.step(keys[t : t + 1])[0] for t in range(frames)])


def test_the_real_game_returns_to_the_start_view_where_the_script_says_it_does():
    """Walking away and back (from the default seed, where the walk hits no wall), and each full circle,
    end on the view the player started from: that is what the models are scored against there."""
    start, away = real_views("away", 200)
    back = pt.depths_for("away", 2000)[3]  # after the second half turn
    assert psnr(away[back - 1 : back], start)[0] > 60
    assert psnr(away[47:48], start)[0] < 30  # it did walk somewhere else first
    start, circles = real_views("circles", 150)
    for d in (72, 144):
        assert psnr(circles[d - 1 : d], start)[0] > 60
    assert psnr(circles[35:36], start)[0] < 30  # half way round it looks elsewhere
    assert not pt.keys_for("still", 50).any()


def test_two_models_side_by_side_give_one_image_and_a_table(tmp_path, capsys):
    a = random_checkpoint(tmp_path / "a.safetensors", seed=1)
    b = random_checkpoint(tmp_path / "b.safetensors", seed=2)
    assert pt.main([str(a), str(b), "--frames", "40", "--out", str(tmp_path / "o")]) == 0
    table = json.loads((tmp_path / "o" / "player_tests.json").read_text())
    assert (tmp_path / "o" / "player_tests.png").stat().st_size > 1000
    assert set(table["situations"]) == {"still", "away", "circles"}
    still = table["situations"]["still"]
    assert still["real game"]["psnr"] is None and set(still) == {"real game", "a", "b"}
    assert list(still["a"]["psnr"]) == ["1", "30"]  # the depths within --frames
    assert still["a"]["psnr"] != still["b"]["psnr"]  # two models, two runs
    assert "still (frames 1, 30)" in capsys.readouterr().out
    assert table["situations"]["still"]["real game"]["psnr_to_start_view"] == {"1": 100.0, "30": 100.0}
