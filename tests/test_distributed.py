"""Data-parallel training on CPU with gloo: 2 ranks x batch b == 1 process x batch 2b; rank 0 alone writes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from worldsim.train import common, distributed, flow, teacher

B = 2  # per-rank batch
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(cfg):
    """A fixed global batch of 2B clips: latents, levels, keys, dropout and noise (seeded, rank-free)."""
    g = torch.Generator().manual_seed(7)
    F = cfg.window
    z0 = torch.randn(2 * B, F, cfg.latent_channels, *cfg.latent_hw, generator=g)  # [B,F,C,h,w]
    t = torch.rand(2 * B, F, generator=g)
    keys = torch.rand(2 * B, F, cfg.num_keys, generator=g) < 0.3
    drop = torch.rand(2 * B, F, generator=g) < 0.3
    noise = torch.randn(z0.shape, generator=g)
    return z0, t, keys, drop, noise


def _train(model, fwd, batches):
    # SGD: its update is linear in the gradient, so a wrong average shows (Adam's first steps are ~sign(g)).
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    amp = torch.autocast("cpu", enabled=False)
    for z0, t, keys, drop, noise in batches:
        flow.train_step(fwd, model, opt, z0, t, keys, drop, grad_clip=0.5, amp=amp, noise=noise)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _model():
    from worldsim.model.config import get_preset

    cfg = get_preset("test")
    torch.manual_seed(0)
    return cfg, teacher.build_dit(cfg)


def _teacher_args(out: Path, ae: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    teacher.add_arguments(p)
    return p.parse_args(
        ["--out", str(out), "--preset", "test", "--device", "cpu", "--no-progress", "--autoencoder", str(ae)]
        + ["--steps", "3", "--batch", "2", "--ckpt-every", "1", "--log-every", "2"]
        # the live path draws its clips through common.game_batches, where the test notes each rank's seed
        # (the store takes the same per-rank seed through LatentBatches)
        + ["--source", "live"]
    )


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tmp_path = Path(tmp)
    info, device = distributed.setup_distributed(torch.device("cpu"))

    # 1. The same update as one process with the whole batch: this rank trains on its half.
    cfg, model = _model()
    if rank == 1:  # a different init on rank 1: DDP must broadcast rank 0's weights
        torch.nn.init.normal_(next(model.parameters()))
    ddp = distributed.parallelize(model, info, device)
    half = slice(rank * B, (rank + 1) * B)
    batch = [x[half] for x in _global_batch(cfg)]
    params = _train(model, ddp, [batch] * STEPS)
    torch.save(params, tmp_path / f"params{rank}.pt")

    # 2. A real teacher run: every atomic_save and every data seed is noted with the rank that made it.
    real_save, real_batches = common.atomic_save, common.game_batches

    def noting_save(obj, path):
        with open(tmp_path / f"saves{rank}.txt", "a") as f:
            f.write(f"{Path(path).name}\n")
        real_save(obj, path)

    def noting_batches(**kw):
        with open(tmp_path / f"seeds{rank}.txt", "a") as f:
            f.write(f"{kw['seed']}\n")
        return real_batches(**kw)

    common.atomic_save, common.game_batches = noting_save, noting_batches
    metrics = teacher.train(_teacher_args(tmp_path / "run", tmp_path / "autoencoder.pt"))
    (tmp_path / f"metrics{rank}.json").write_text(json.dumps(metrics))
    distributed.cleanup(info)


@pytest.fixture(scope="module")
def two_rank_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg, _ = _model()
    from worldsim.model.autoencoder import Autoencoder

    ae = Autoencoder(cfg.autoencoder)  # untrained: what is tested is who writes and who draws what
    state = {"kind": "autoencoder", "config": dataclasses.asdict(cfg.autoencoder), "model": ae.state_dict()}
    common.atomic_save(state, tmp / "autoencoder.pt")
    mp.start_processes(_worker, args=(_free_port(), str(tmp)), nprocs=2, join=True, start_method="spawn")
    return tmp


def test_two_ranks_with_batch_b_update_like_one_process_with_2b(two_rank_job):
    cfg, model = _model()
    single = _train(model, model, [_global_batch(cfg)] * STEPS)
    p0 = torch.load(two_rank_job / "params0.pt", weights_only=True)
    p1 = torch.load(two_rank_job / "params1.pt", weights_only=True)
    _, init = _model()
    moved = 0
    for k, v in single.items():
        torch.testing.assert_close(p0[k], v, rtol=1e-4, atol=1e-5, msg=f"{k}: 2 ranks x {B} != 1 x {2 * B}")
        moved += int(not torch.equal(v, init.state_dict()[k]))
    for k in single:
        torch.testing.assert_close(p1[k], p0[k], rtol=0, atol=0, msg=f"{k}: the ranks diverged")
    assert moved >= 8  # the steps did change the weights (adaLN-Zero: at first only the gates and a few)


def test_rank_zero_alone_writes_and_ranks_draw_their_own_data(two_rank_job):
    saves0 = (two_rank_job / "saves0.txt").read_text().split()
    assert saves0.count("teacher.pt") == 3 + 1  # --ckpt-every 1 over 3 steps, then the final state
    assert not (two_rank_job / "saves1.txt").exists()  # rank 1 wrote nothing
    state = torch.load(two_rank_job / "run" / "teacher.pt", weights_only=True)
    assert state["step"] == 3 and state["metrics"]["ranks"] == 2
    assert json.loads((two_rank_job / "run" / "teacher.json").read_text())["steps"] == 3
    # The held-out batch is shared (a comparable validation loss); the training data is not.
    val0, train0 = map(int, (two_rank_job / "seeds0.txt").read_text().split())
    val1, train1 = map(int, (two_rank_job / "seeds1.txt").read_text().split())
    assert val0 == val1 and train0 != train1
    m0 = json.loads((two_rank_job / "metrics0.json").read_text())
    m1 = json.loads((two_rank_job / "metrics1.json").read_text())
    assert m0["ema_val_loss"] == m1["ema_val_loss"]  # the same EMA weights on both ranks


def test_without_torchrun_env_it_is_one_process(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    info, device = distributed.setup_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)
    model = torch.nn.Linear(2, 2)
    assert distributed.parallelize(model, info, device) is model
    assert distributed.rank_seed(5, info) == 5  # a plain run draws what it always drew
    assert distributed.agree(7, info, device) == 7
