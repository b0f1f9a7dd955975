"""Streamed self-forcing rollouts: a rollout cut into chunks is the uninterrupted rollout, gradient reaches
only the newest chunk, rows restart staggered, the idle fraction holds, and `train self-forcing` streams
end to end on the game and on a `worldsim collect` dataset (its recorded frames as the truth)."""

import json

import pytest
import torch
from test_self_forcing import _models, teacher_ckpt  # noqa: F401 (teacher_ckpt: a fixture)

from worldsim.errors import UserError
from worldsim.model.kvcache import KVCache
from worldsim.sampling import schedule_for
from worldsim.train.rollout import rollout
from worldsim.train.streaming import Streams, Windows


class RandomWindows:
    """Windows of random 'real' latents and keys (the model does not care what they show)."""

    def __init__(self, cfg, length: int, seed: int = 0):
        self.cfg, self.length, self.g = cfg, length, torch.Generator().manual_seed(seed)

    def __call__(self, n: int):
        C, (h, w), K = self.cfg.latent_channels, self.cfg.latent_hw, self.cfg.num_keys
        z = torch.randn(n, self.length, C, h, w, generator=self.g)
        return z, torch.rand(n, self.length, K, generator=self.g) < 0.4


def _streams(cfg, rows, R, chunk, *, idle=0.0, stagger=True, seed=0, Fc=2, idle_R=None):
    s = Streams(cfg, rows, lambda n: None, rollout_frames=R, chunk=chunk, context_frames=Fc, idle_fraction=idle,
                context_noise=0.0, device=torch.device("cpu"), seed=seed, stagger=stagger,
                idle_rollout_frames=idle_R)  # fmt: skip
    s.draw = RandomWindows(cfg, s.window(), seed)
    return s


def test_streamed_rollout_equals_one_uninterrupted_rollout():
    """Row by row, a rollout streamed in chunks (rows at other depths beside it, restarts in between, the
    ring wrapping 3 times) gives the frames of one `rollout` over the same context, keys and noise."""
    cfg, dit, _ = _models(3)
    B, R, F = 3, 12, 3  # window 4: 2 context + 12 frames wrap the ring 3 times
    s = _streams(cfg, B, R, F)
    schedule = schedule_for(cfg)
    g = torch.Generator().manual_seed(7)
    chunks, noises = [], []
    with torch.no_grad():
        for _ in range(3 * R // F):
            noise = torch.randn(B, F, cfg.latent_channels, *cfg.latent_hw, generator=g)
            chunks.append(s.advance(dit, schedule, noise=noise))
            noises.append(noise)
    checked = 0
    for r in range(B):
        starts = [i for i, c in enumerate(chunks) if c.depth[r] == 0]
        for i, end in zip(starts, starts[1:]):  # each rollout the test saw to its end (the first is cut)
            run = range(i, end)
            got = torch.cat([chunks[j].x0[r] for j in run])  # [R, C, h, w]
            keys = torch.cat([chunks[j].keys[r] for j in run])[None]
            noise = torch.cat([noises[j][r] for j in run])[None]
            ctx_z, ctx_keys = chunks[i].ctx_z[r : r + 1, -2:], chunks[i].ctx_keys[r : r + 1, -2:]
            with torch.no_grad():
                want = rollout(dit, KVCache(cfg, 1), ctx_z, ctx_keys, keys, noise, schedule)[0]
            # one row alone vs three together: other fp32 kernels, nothing more (a wrong slot is O(1))
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            checked += 1
    assert checked >= 2 * B  # every row: its first (cut) rollout and a full one after it


def test_gradient_reaches_only_the_newest_chunk():
    cfg, dit, _ = _models(4)
    dit.requires_grad_(True)
    s = _streams(cfg, 2, 8, 2, stagger=False)
    schedule = schedule_for(cfg)
    first = s.advance(dit, schedule, exit_steps=[0, 1], grad=True)
    second = s.advance(dit, schedule, exit_steps=[1, 0], grad=True)
    assert first.x0.requires_grad and second.x0.requires_grad
    assert not second.ctx_z.requires_grad and not second.true_z.requires_grad  # history: detached values
    torch.testing.assert_close(second.ctx_z[:, -2:], first.x0.detach())  # the chunk before is the context
    # no path from the newest chunk back into the one before: earlier frames live as detached cache K/V
    (back,) = torch.autograd.grad(second.x0.pow(2).sum(), first.x0, allow_unused=True)
    assert back is None
    grads = torch.autograd.grad(second.x0.pow(2).sum(), list(dit.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_rows_restart_staggered():
    cfg, dit, _ = _models(5)
    B, R, F = 4, 8, 2  # 4 chunks a rollout: the 4 rows' first rollouts end after 4, 3, 2, 1 chunks
    s = _streams(cfg, B, R, F)
    schedule = schedule_for(cfg)
    depths = []
    with torch.no_grad():
        for _ in range(12):
            depths.append(s.advance(dit, schedule).depth.tolist())
    assert depths[0] == [0, 0, 0, 0]
    for d in depths[R // F :]:  # after the first rollouts: every depth at once, one row each
        assert sorted(d) == [0, 2, 4, 6]
    for r in range(B):  # a row restarts every R / F iterations once its first rollout ends
        restarts = [i for i, d in enumerate(depths) if d[r] == 0]
        assert all(b - a == R // F for a, b in zip(restarts[1:], restarts[2:]))
    assert s.rollouts == B + sum(len([i for i, d in enumerate(depths) if d[r] == 0]) - 1 for r in range(B))


def test_idle_fraction_holds_and_idle_rollouts_hold_still():
    cfg, dit, _ = _models(6)
    B, R = 64, 4
    s = _streams(cfg, B, R, 2, idle=0.15, seed=11)
    rows = torch.arange(B)
    n_idle = []
    with torch.no_grad():
        for _ in range(20):
            s.restart(dit, rows)
            n_idle.append(int(s.idle.sum()))
            still = s.hist_z[:, -1:].expand_as(s.plan_z)
            assert not s.plan_keys[s.idle].any()  # no key held for the whole rollout
            assert torch.equal(s.plan_z[s.idle], still[s.idle])  # the view stays the last context frame
            assert s.plan_keys[~s.idle].any()  # the others keep their drawn keys
    frac = sum(n_idle) / (20 * B)
    assert s.rollouts == 20 * B and s.idle_rollouts == sum(n_idle)
    assert abs(frac - 0.15) < 0.04, frac  # 1,280 rollouts: sd 0.010, so 4 sd


def test_idle_rollouts_run_their_own_length_holding_the_still_view_past_the_plan():
    """--idle-rollout-frames: an idle row restarts after its own length (3x the moving rows' here), and
    every chunk of it, also past the moving rollout's length, holds no key and the still view as truth."""
    cfg, dit, _ = _models(6)
    B, R, F = 8, 4, 2
    s = _streams(cfg, B, R, F, idle=0.5, stagger=False, seed=3, idle_R=3 * R)
    with torch.no_grad():
        first = s.advance(dit, schedule_for(cfg, cfg.steps))
        idle = first.idle.clone()
        assert idle.any() and (~idle).any()
        still = first.ctx_z[:, -1]  # the last real context frame: an idle row's truth at every depth
        depths = [first.depth.clone()]
        for _ in range(3 * R // F - 1):
            c = s.advance(dit, schedule_for(cfg, cfg.steps))
            depths.append(c.depth.clone())
            assert not c.keys[idle].any()
            assert torch.equal(c.true_z[idle], still[idle][:, None].expand_as(c.true_z[idle]))
        nxt = s.advance(dit, schedule_for(cfg, cfg.steps))
    # moving rows restarted every R frames (depths 0, 2, 0, 2, ...), idle ones ran 0..10 and restart now
    assert [int(d[~idle][0]) for d in depths] == [0, 2] * (3 * R // F // 2)
    assert [int(d[idle][0]) for d in depths] == list(range(0, 3 * R, F))
    assert (nxt.depth[idle] == 0).all()  # their rollouts ended after 3 R frames: new ones (idle or not) began


def test_idle_rollout_length_refused_unless_a_multiple_of_the_chunk():
    cfg, _, _ = _models(6)
    with pytest.raises(ValueError, match="idle_rollout_frames 3 must be a positive multiple of chunk 2"):
        _streams(cfg, 2, 4, 2, idle_R=3)


@pytest.mark.parametrize("merged", [True, False])
def test_streamed_rollouts_give_critic_fakes_and_generator_frames(merged):
    """Both ways of streaming the two kinds of rows (merged: the GPU's default) give B x critic-steps
    detached fakes and B generator rows with gradient, the generator's rows at staggered depths."""
    import argparse

    from worldsim.train.sf_data import StreamedRollouts

    cfg, dit, _ = _models(7)
    dit.requires_grad_(True)
    B, cs, R, F = 4, 2, 8, 2
    args = argparse.Namespace(batch=B, critic_steps=cs, rollout_frames=R, chunk=F, context_frames=2,
                              idle_fraction=0.0, idle_rollout_frames=None)  # fmt: skip
    windows = RandomWindows(cfg, 3 + R)
    data = argparse.Namespace(next=lambda: windows(B))
    s = StreamedRollouts(
        args, cfg, data, schedule_for(cfg), torch.device("cpu"), torch.float32, 0, merged=merged
    )
    for _ in range(R // F + 1):
        fake = s.critic(dit)
        gen = s.generator(dit)
    assert fake.x0.shape[0] == B * cs and not fake.x0.requires_grad
    assert gen.x0.shape[0] == B and gen.x0.requires_grad
    assert len(set(gen.depth.tolist())) > 1  # not all generator rows at one depth
    grads = torch.autograd.grad(gen.x0.pow(2).mean(), list(dit.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_windows_hand_out_each_drawn_window_once():
    batches = iter([(torch.arange(3)[:, None], torch.arange(3)[:, None]) for _ in range(3)])
    w = Windows(lambda: next(batches))
    got = [w(2)[0].flatten().tolist(), w(2)[0].flatten().tolist(), w(4)[0].flatten().tolist()]
    assert got == [[0, 1], [2, 0], [1, 2, 0, 1]]


def test_self_forcing_streams_end_to_end(teacher_ckpt, tmp_path):  # noqa: F811
    from worldsim.checkpoint import load_checkpoint
    from worldsim.neural import NeuralWorld

    out, student = tmp_path / "sf", tmp_path / "student.safetensors"
    argv = [
        "--rollout-frames",
        "32",
        "--steps",
        "3",
        "--context-noise",
        "0.2",
        "--regression-horizon",
        "16",
        "--idle-rollout-frames",
        "64",
        "--idle-dmd",
        "0",
        "--stats-weight",
        "0.5",
        "--hold-weight",
        "2",
        "--export",
        str(student),
    ]
    assert _cli(teacher_ckpt, out, *argv) == 0
    m = json.loads((out / "self_forcing.json").read_text())
    assert m["streamed"] and m["rollout_frames"] == 32 and m["chunk"] == 2 and m["regression_weight"] == 1.0
    assert m["regression_horizon"] == 16 and m["idle_rollout_frames"] == 64 and m["idle_dmd"] == 0
    assert m["stats_weight"] == 0.5 and m["final"]["stats"] >= 0  # the statistics term ran and was logged
    assert m["hold_weight"] == 2 and m["final"]["hold"] >= 0
    assert m["mean_rollout_depth"] == 2.0  # depths 0, 2, 4 of the three chunks
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout_depth"] for r in rows] == [0.0]  # step 1 (rows every 5 steps)
    assert all(torch.isfinite(torch.tensor(v)) for v in m["final"].values())
    card = student.with_suffix(".md").read_text()
    assert "idle ones of 64 frames, DMD weight 0 on the idle ones" in card  # the recipe is on the card
    assert "frame statistics weight 0.5" in card and "hold weight 2 on frames made with no key" in card
    ckpt = load_checkpoint(student)
    assert ckpt.config.context_noise == 0.2  # the level the student trained with is the one it deploys
    world = NeuralWorld.from_checkpoint(student, device="cpu", batch_size=1)
    assert world.reset(0) is not None
    assert world.step(torch.zeros(1, world.num_keys, dtype=torch.bool)).shape == (1, *world.cfg.image_hw, 3)
    assert _cli(teacher_ckpt, out, "--steps", "4", "--resume") == 0
    state = torch.load(out / "self_forcing.pt", weights_only=True)
    assert state["step"] == 4 and state["hparams"]["rollout_frames"] == 32


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--rollout-frames", "32", "--context", "true"], "--rollout-frames 0"),
        (["--rollout-frames", "32", "--frames", "6"], "--frames 6 sets fresh rollouts"),
        (["--rollout-frames", "30", "--chunk", "4"], "--chunk 4"),
        (["--rollout-frames", "32", "--idle-fraction", "1.5"], "--idle-fraction"),
        (["--rollout-frames", "32", "--idle-dmd", "-1"], "--idle-dmd must be >= 0"),
        (["--rollout-frames", "32", "--idle-rollout-frames", "33"], "--idle-rollout-frames 33"),
        (["--rollout-frames", "0", "--idle-rollout-frames", "64"], "--idle-rollout-frames 64 shapes"),
        (["--rollout-frames", "0", "--chunk", "2"], "--chunk 2 shapes streamed rollouts"),
        (["--rollout-frames", "0", "--regression-horizon", "8"], "--regression-horizon 8.0"),
        (["--rollout-frames", "32", "--regression-horizon", "-1"], "--regression-horizon -1.0"),
        (["--rollout-frames", "32", "--stats-weight", "-1"], "--stats-weight -1.0"),
        (["--rollout-frames", "0", "--stats-weight", "1"], "--stats-weight 1.0"),
        (["--rollout-frames", "32", "--hold-weight", "-1"], "--hold-weight -1.0"),
        (["--rollout-frames", "0", "--hold-weight", "1"], "--hold-weight 1.0: a weight >= 0"),
    ],
)
def test_streaming_flags_refused(teacher_ckpt, tmp_path, flags, match):  # noqa: F811
    with pytest.raises(UserError, match=match):
        _train_args(teacher_ckpt, tmp_path / "x", *flags)
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from worldsim.cli import main

    out = tmp_path_factory.mktemp("data") / "game"
    assert (
        main(["collect", "--out", str(out), "--clips", "6", "--frames", "40", "--size", "32", "--batch", "6"])
        == 0
    )
    return out


def test_self_forcing_on_a_dataset(teacher_ckpt, dataset, tmp_path):  # noqa: F811
    from worldsim.neural import NeuralWorld

    out, student = tmp_path / "sf", tmp_path / "student.safetensors"
    argv = ["--data", str(dataset), "--rollout-frames", "32", "--steps", "2", "--export", str(student)]
    assert _cli(teacher_ckpt, out, *argv) == 0
    m = json.loads((out / "self_forcing.json").read_text())
    assert m["data"]["path"] == str(dataset) and m["idle_fraction"] == 0.0 and m["data"]["length"] == 40
    assert m["data"]["manifest"]["frames"] == 40 and m["data"]["manifest"]["count"] == 6
    world = NeuralWorld.from_checkpoint(student, device="cpu", batch_size=1)
    assert world.reset(0) is not None
    # 3 history + 33 frames do not fit clips of 40 frames: the message says which flag to change
    with pytest.raises(UserError, match="lower --rollout-frames to <= 37"):
        _train_args(
            teacher_ckpt, tmp_path / "long", "--data", str(dataset), "--rollout-frames", "38", "--chunk", "2"
        )
    with pytest.raises(UserError, match="--idle-fraction 0"):
        _train_args(teacher_ckpt, tmp_path / "idle", "--data", str(dataset), "--rollout-frames", "32",
                    "--idle-fraction", "0.2")  # fmt: skip
    with pytest.raises(UserError, match="a recorded game moves on its own"):  # Atari's ball moves with no key
        _train_args(teacher_ckpt, tmp_path / "hold", "--data", str(dataset), "--rollout-frames", "32",
                    "--hold-weight", "1")  # fmt: skip


def test_dataset_streams_hold_the_recorded_keys_and_frames(teacher_ckpt, dataset):  # noqa: F811
    """The truth of every chunk is the encoded recorded frames on the recorded keys (train split only)."""
    from worldsim.checkpoint import load_checkpoint
    from worldsim.data.dataset import Dataset
    from worldsim.train.flow import encode_clips
    from worldsim.train.store import LatentBatches, StoreSpec

    ckpt = load_checkpoint(teacher_ckpt)
    cfg, dit, ae = _models(2)
    ae.load_state_dict(ckpt.float_state("autoencoder"))
    data = LatentBatches("store", ae=ae, batch=2, frames=3 + 8, num_keys=cfg.num_keys, device=torch.device("cpu"),
                         seed=0, spec=StoreSpec(trajectories=4, length=40), data=str(dataset))  # fmt: skip
    s = Streams(cfg, 2, Windows(data.next), rollout_frames=8, chunk=4, context_frames=2, idle_fraction=0.0,
                context_noise=0.0, device=torch.device("cpu"))  # fmt: skip
    ds = Dataset(dataset)
    train = ds.split("train")
    clips = [ds.clip(int(i)) for i in train]
    z = [encode_clips(ae, torch.from_numpy(f)[None])[0] for f, _ in clips]  # [40, C, h, w] each
    keys = [torch.from_numpy(k) for _, k in clips]
    with torch.no_grad():
        chunk = s.advance(dit, schedule_for(cfg))
    for r in range(2):  # find the recorded window each row streams: its keys and frames match
        hits = [
            (i, t) for i in range(len(clips)) for t in range(40 - 4 + 1)
            if torch.equal(keys[i][t : t + 4], chunk.keys[r])
            and torch.allclose(z[i][t : t + 4], chunk.true_z[r], rtol=2**-7, atol=1e-4)
        ]  # fmt: skip
        assert hits, f"row {r}: its truth is no recorded window of the train split"


def _argv(teacher, out) -> list[str]:
    return ["--teacher", str(teacher), "--device", "cpu", "--batch", "2", "--critic-steps", "2", "--out", str(out),
            "--no-progress", "--ckpt-every", "2", "--store-trajectories", "4"]  # fmt: skip


def _cli(teacher, out, *extra) -> int:
    from worldsim.cli import main

    return main(["train", "self-forcing", *_argv(teacher, out), *extra])


def _train_args(teacher, out, *extra) -> dict:
    """`train` itself (a UserError raised, not turned into an exit code)."""
    import argparse

    from worldsim.train import self_forcing
    from worldsim.train.options import add_self_forcing_arguments

    p = argparse.ArgumentParser()
    add_self_forcing_arguments(p)
    return self_forcing.train(p.parse_args([*_argv(teacher, out), "--steps", "1", *extra]))
