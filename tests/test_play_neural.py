"""Play on the neural world (a randomly initialised `test` checkpoint): the CLI picks it from
--checkpoint, the recording names it by hash, and the HUD shows its denoising steps."""

import pygame
import pytest
import torch
from worldsim.controllers.sources import WorldSource
from worldsim.controllers.window import Window

from worldsim.cli import main
from worldsim.record import read_recording


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from worldsim.checkpoint import save_checkpoint
    from worldsim.model import DiT, get_preset
    from worldsim.model.autoencoder import Autoencoder
    from worldsim.train.export import start_latents

    torch.manual_seed(0)
    cfg = get_preset("test")
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    _, z = start_latents(ae, [0, 1])
    path = tmp_path_factory.mktemp("ckpt") / "random-test.safetensors"
    save_checkpoint(path, config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(), start_latents=z)
    return path


def test_headless_neural_play_records_the_checkpoint(checkpoint, tmp_path):
    rec = tmp_path / "n.wsrec"
    argv = ["play", "--checkpoint", str(checkpoint), "--device", "cpu", "--headless", "--frames", "4"]
    assert main([*argv, "--bot", "random-sticky", "--record", str(rec)]) == 0
    r = read_recording(rec)
    assert r.header["world"] == "neural" and len(r.records) == 4
    assert r.header["checkpoint_hash"], "a neural recording names its checkpoint"


def test_window_hud_shows_the_neural_world_and_its_steps(checkpoint):
    from worldsim.neural import NeuralWorld

    world = NeuralWorld.from_checkpoint(str(checkpoint), device="cpu", batch_size=1)
    source = WorldSource(world, fps=30.0)
    huds = []

    def on_frame(frame):
        huds.append(window.hud_lines(frame))
        if len(huds) == 2:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))

    window = Window(source, scale=2, on_frame=on_frame, max_frames=8, gamepad=False)
    try:
        summary = window.run()
    finally:
        source.close()
    assert summary.world == "neural" and summary.frames == 8
    assert f"steps {world.steps}" in huds[-1] and huds[-1][0].startswith("neural")
    assert "model random-test" in huds[-1], "the HUD names the model by its checkpoint"
    assert any(line.startswith("latency ") and line != "latency -" for line in huds[-1])
    assert any(line == "keys W" for hud in huds[2:] for line in hud), "the HUD shows the held key"
