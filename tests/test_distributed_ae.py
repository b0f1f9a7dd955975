"""`worldsim train autoencoder` on 2 gloo ranks: own data per rank, the same weights, rank 0 alone writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_distributed import _free_port

from worldsim.train import autoencoder, common


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tmp_path = Path(tmp)
    real_save, real_batches, real_psnr = common.atomic_save, common.game_batches, autoencoder.heldout_psnr

    # Every save and data seed is noted with the rank that made it, and each rank's weights after training.
    def noting_save(obj, path):
        with open(tmp_path / f"saves{rank}.txt", "a") as f:
            f.write(f"{Path(path).name}\n")
        real_save(obj, path)

    def noting_batches(**kw):
        with open(tmp_path / f"seeds{rank}.txt", "a") as f:
            f.write(f"{kw['seed']}\n")
        return real_batches(**kw)

    def noting_psnr(ae, x, *a, **kw):  # the last call is the final held-out PSNR, after training
        torch.save({k: v.clone() for k, v in ae.state_dict().items()}, tmp_path / f"weights{rank}.pt")
        return real_psnr(ae, x, *a, **kw)

    common.atomic_save, common.game_batches = noting_save, noting_batches
    autoencoder.heldout_psnr = noting_psnr
    from worldsim.cli import main

    argv = ["train", "autoencoder", "--preset", "test", "--device", "cpu", "--steps", "2"]
    argv += ["--batch", "2", "--heldout", "4", "--ckpt-every", "1", "--no-progress"]
    code = main(argv + ["--out", str(tmp_path / "run")])
    (tmp_path / f"code{rank}.txt").write_text(str(code))


@pytest.fixture(scope="module")
def two_rank_ae(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_ae")
    mp.start_processes(_worker, args=(_free_port(), str(tmp)), nprocs=2, join=True, start_method="spawn")
    return tmp


def test_two_ranks_train_their_own_data_into_the_same_weights(two_rank_ae):
    assert (two_rank_ae / "code0.txt").read_text() == "0" == (two_rank_ae / "code1.txt").read_text()
    held0, train0 = map(int, (two_rank_ae / "seeds0.txt").read_text().split())
    held1, train1 = map(int, (two_rank_ae / "seeds1.txt").read_text().split())
    assert held0 == held1 and train0 != train1  # a shared held-out set, training data of their own
    w0 = torch.load(two_rank_ae / "weights0.pt", weights_only=True)
    w1 = torch.load(two_rank_ae / "weights1.pt", weights_only=True)
    # Different batches, identical weights after 2 Adam steps: DDP averaged the gradients.
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], rtol=0, atol=0, msg=f"{k}: the ranks diverged")
    state = torch.load(two_rank_ae / "run" / autoencoder.STATE_FILE, weights_only=True)
    init = autoencoder.Autoencoder(autoencoder.autoencoder_config("test")).state_dict()
    assert any(not torch.equal(w0[k], init[k]) for k in init if k.startswith("encoder"))  # it trained
    for k, v in state["model"].items():  # what rank 0 saved is what both ranks hold
        torch.testing.assert_close(v, w0[k], rtol=0, atol=0)


def test_rank_zero_alone_writes_the_state(two_rank_ae):
    saves0 = (two_rank_ae / "saves0.txt").read_text().split()
    assert saves0.count(autoencoder.STATE_FILE) == 2 + 1  # --ckpt-every 1 over 2 steps, then the final
    assert not (two_rank_ae / "saves1.txt").exists()  # rank 1 wrote nothing
    state = torch.load(two_rank_ae / "run" / autoencoder.STATE_FILE, weights_only=True)
    assert state["kind"] == "autoencoder" and state["step"] == 2 and state["metrics"]["ranks"] == 2
    metrics = json.loads((two_rank_ae / "run" / "autoencoder.json").read_text())
    assert metrics["steps"] == 2 and metrics["ranks"] == 2 and "decode_ms_per_frame_cpu" in metrics
    assert (two_rank_ae / "run" / "autoencoder_loss.png").exists()
