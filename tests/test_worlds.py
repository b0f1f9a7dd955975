"""The one world factory (worldsim/worlds.py) and the one device default (worldsim/device.py)."""

import pytest
import torch

from worldsim.checkpoint import save_checkpoint
from worldsim.device import default_device, resolve_device
from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.neural import NeuralWorld
from worldsim.worlds import make_world, world_factory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = get_preset("test")
    torch.manual_seed(0)
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    start = torch.randn(2, 1, cfg.latent_channels, *cfg.latent_hw)
    path = tmp_path_factory.mktemp("ckpt") / "w.safetensors"
    return save_checkpoint(
        path, config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(), start_latents=start
    )


def test_game_and_neural_worlds_by_name_and_how_they_name_themselves(checkpoint):
    game = make_world("game", size=16, batch_size=2)
    assert isinstance(game, GameWorld) and game.device.type == "cpu"  # one game: the CPU unless told
    assert game.reset([0, 1]).shape == (2, 16, 16, 3)
    neural = world_factory("neural", checkpoint=str(checkpoint), device="cpu", dtype=torch.float32)(3)
    assert type(neural) is NeuralWorld  # on a CPU: the eager world itself, nothing named after a graph
    d = neural.describe()
    assert d["world"] == "NeuralWorld" and d["checkpoint"] == "w" and d["engine"] == "eager"
    assert d["batch_size"] == 3 and d["steps"] == neural.steps and len(d["checkpoint_hash"]) == 64
    assert "checkpoint" not in game.describe()


def test_bad_names_and_devices_are_one_line_errors():
    with pytest.raises(
        UserError, match=r"--world must be one of game, neural, gym:ID \(e.g. gym:CartPole-v1\), got 'gmae'"
    ):
        make_world("gmae")
    with pytest.raises(
        UserError, match=r"--world must be one of game, neural, gym:ID \(e.g. gym:CartPole-v1\), got 'x'"
    ):
        world_factory("x")
    with pytest.raises(UserError, match="--device gpu0: not a device name"):
        resolve_device("gpu0")
    assert resolve_device(None) == default_device() and resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert default_device() == torch.device("cpu")
        with pytest.raises(UserError, match="(CPU-only build|torch sees no GPU); use --device cpu"):
            resolve_device("cuda")
        with pytest.raises(UserError, match="kernels=True needs CUDA"):
            make_world("neural", kernels=True, device="cpu")
