"""The latent trajectory store: what it holds (the autoencoder's latents of its source's frames, in bf16),
the windows it samples, the round-robin refresh, its flags' errors, and its two sources (a `worldsim
collect` dataset folder, the real game)."""

import argparse

import numpy as np
import pytest
import torch

from worldsim.cli import main as cli_main
from worldsim.errors import UserError
from worldsim.model import get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.train.flow import encode_clips
from worldsim.train.options import add_store_arguments
from worldsim.train.store import (
    RENDER_CHUNK,
    LatentBatches,
    LatentStore,
    StoreSpec,
    dataset_source,
    game_source,
    store_spec,
)

CPU = torch.device("cpu")
CFG = get_preset("test")
H, W = CFG.image_hw
K = CFG.num_keys


def _bf16_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """`got` (stored bf16) against fp32 latents: bf16 keeps 8 significant bits (one ulp: 2^-8 relative);
    the encode's own fp32 rounding may tip a value across a rounding boundary, so two ulps."""
    torch.testing.assert_close(got.float(), want.float(), rtol=2**-7, atol=1e-4)


@pytest.fixture(scope="module")
def ae():
    torch.manual_seed(0)
    return Autoencoder(CFG.autoencoder).eval().requires_grad_(False)


class RandomSource:
    """Trajectories of random frames and keys (call c: generator seed c), yielded in uneven chunks of 3;
    `calls` keeps each call's whole trajectories, so a test knows what the store should hold."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, n: int, length: int):
        g = torch.Generator().manual_seed(len(self.calls))
        f = torch.randint(0, 256, (n, length, H, W, 3), generator=g, dtype=torch.uint8)
        k = torch.rand(n, length, K, generator=g) > 0.5
        self.calls.append((f, k))
        for t0 in range(0, length, 3):
            yield f[:, t0 : t0 + 3], k[:, t0 : t0 + 3]


def _store(ae, T=5, L=10, **kw):
    src = RandomSource()
    spec = StoreSpec(trajectories=T, length=L, refresh_every=kw.pop("refresh_every", 0),
                     refresh_fraction=kw.pop("refresh_fraction", 0.4))  # fmt: skip
    return LatentStore(ae, src, spec, num_keys=K, device=CPU, **kw), src


def test_store_holds_the_encoded_frames_in_bf16(ae):
    store, src = _store(ae, group=2)  # 5 trajectories rendered 2 + 2 + 1
    assert [c[0].shape[0] for c in src.calls] == [2, 2, 1] and store.rendered == 5
    frames = torch.cat([c[0] for c in src.calls])
    keys = torch.cat([c[1] for c in src.calls])
    assert store.z.dtype == torch.bfloat16 and store.z.shape == (5, 10, CFG.latent_channels, *CFG.latent_hw)
    _bf16_close(store.z, encode_clips(ae, frames))
    assert torch.equal(store.keys, keys)
    assert store.frames == 50 and store.nbytes == store.z.numel() * 2 + store.keys.numel()


def test_sample_gives_contiguous_windows_of_one_trajectory_with_their_keys(ae):
    store, _ = _store(ae)
    F, L = 4, store.spec.length
    z, keys = store.sample(200, F, generator=torch.Generator().manual_seed(0))
    assert z.dtype == torch.float32 and z.shape == (200, F, *store.z.shape[2:]) and keys.shape == (200, F, K)
    seen = set()
    for b in range(200):  # random frames: each window matches exactly one (trajectory, start)
        hits = [(i, s) for i in range(store.spec.trajectories) for s in range(L - F + 1)
                if torch.equal(store.z[i, s : s + F].float(), z[b])]  # fmt: skip
        assert len(hits) == 1, (b, hits)
        i, s = hits[0]
        assert torch.equal(keys[b], store.keys[i, s : s + F]), b  # the keys of that very window
        seen.add((i, s))
    # every trajectory and every start, the last one (L - F) included, comes up in 200 draws
    assert {i for i, _ in seen} == set(range(5)) and {s for _, s in seen} == set(range(L - F + 1))
    full, _ = store.sample(3, L)  # a window as long as the trajectory is the whole trajectory
    assert all(any(torch.equal(full[b], store.z[i].float()) for i in range(5)) for b in range(3))


def test_refresh_replaces_the_oldest_trajectories_round_robin(ae):
    store, src = _store(ae, T=5, refresh_fraction=0.4, refresh_every=3)
    expect_rows = [[0, 1], [2, 3], [4, 0], [1, 2]]  # 2 of 5 per refresh, wrapping around
    for n, rows in enumerate(expect_rows, start=1):
        before = store.z.clone()
        assert store.refresh() == 2
        frames, keys = src.calls[n]
        _bf16_close(store.z[rows], encode_clips(ae, frames))
        assert torch.equal(store.keys[rows], keys)
        others = [i for i in range(5) if i not in rows]
        assert torch.equal(store.z[others], before[others])
    assert store.rendered == 5 + 2 * len(expect_rows)
    calls = len(src.calls)
    for step in (0, 1, 2, 4, 5):
        store.maybe_refresh(step)
    assert len(src.calls) == calls  # only every --refresh-every steps
    store.maybe_refresh(6)
    assert len(src.calls) == calls + 1
    assert store.refresh(0.0) == 0 and store.refresh(1.0) == 5  # fraction 1: the whole store


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("trajectories", 0, "--store-trajectories"),
        ("length", 1, "--store-length"),
        ("refresh_every", -1, "--refresh-every"),
        ("refresh_fraction", 1.5, "--refresh-fraction"),
    ],
)
def test_store_spec_errors_name_the_flag(field, value, flag):
    with pytest.raises(UserError, match=f"{flag} .*{value}"):
        StoreSpec(**{field: value})


def test_store_size_errors_name_the_flag(ae):
    store, _ = _store(ae, L=10)
    with pytest.raises(UserError, match="--store-length to >= 11"):
        store.sample(2, 11)
    kw = dict(ae=ae, batch=2, frames=12, num_keys=K, device=CPU, seed=0)
    with pytest.raises(UserError, match="--store-length 8 .*--store-length >= 12"):
        LatentBatches("store", spec=StoreSpec(trajectories=1, length=8), **kw)
    with pytest.raises(UserError, match="--source 'disk'"):
        LatentBatches("disk", **kw)


def test_store_flags_default_by_device():
    p = argparse.ArgumentParser()
    add_store_arguments(p)
    args = p.parse_args([])
    assert store_spec(args, CPU, clip=6) == StoreSpec(trajectories=32, length=256, refresh_every=200)
    assert store_spec(args, CPU, clip=200).length == 400  # a trajectory holds at least two clips
    args = p.parse_args(["--store-trajectories", "3", "--store-length", "9", "--refresh-every", "0"])
    assert store_spec(args, torch.device("cuda"), clip=4) == StoreSpec(3, 9, 0, 0.05)


# ---------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    pytest.importorskip("worldsim.game")
    out = tmp_path_factory.mktemp("ds") / "game"
    # 4 games side by side, one clip each: consecutive clips of one game continue its episode, and one
    # idling across both would record the same frames twice
    argv = ["collect", "--out", str(out), "--clips", "4", "--frames", "8", "--size", str(H), "--batch", "4"]
    assert cli_main(argv) == 0
    from worldsim.data import Dataset

    return out, Dataset(out)


def test_dataset_source_fills_the_store_with_the_datasets_windows(ae, dataset):
    folder, ds = dataset
    render, frames = dataset_source(folder, size=H, seed=0)
    assert frames == ds.frames == 8
    L = 6  # shorter than the clips: each trajectory is a window at a random start
    store = LatentStore(ae, render, StoreSpec(trajectories=4, length=L, refresh_every=0), num_keys=K,
                        device=CPU)  # fmt: skip
    clips = [ds.clip(i) for i in range(len(ds))]
    latents = [encode_clips(ae, torch.from_numpy(f)[None])[0] for f, _ in clips]  # [8, C, h, w] each
    used = []
    for r in range(4):
        hits = []
        for i, (_, k) in enumerate(clips):
            for s in range(ds.frames - L + 1):
                if np.array_equal(store.keys[r].numpy(), k[s : s + L]):
                    try:
                        _bf16_close(store.z[r], latents[i][s : s + L])
                    except AssertionError:
                        continue
                    hits.append((i, s))
        # the keys and latents of a window of one recorded clip (an idle stretch repeats its frames, so
        # several starts in that clip may match)
        assert len({i for i, _ in hits}) == 1, (r, hits)
        used.append(hits[0][0])
    # 4 trajectories from the 3 training clips (clip 3 is held out for eval --data): each at least once
    assert sorted(set(used)) == [0, 1, 2] and 3 not in ds.split("train")

    with pytest.raises(UserError, match="--store-length 9 .*--store-length <= 8"):
        LatentStore(ae, render, StoreSpec(trajectories=1, length=9), num_keys=K, device=CPU)


def test_dataset_source_errors_name_the_flag(tmp_path):
    with pytest.raises(UserError, match="--data .*worldsim collect"):
        dataset_source(tmp_path / "nothing", size=H, seed=0)


def test_latent_batches_from_a_dataset(ae, dataset):
    folder, _ = dataset
    data = LatentBatches("store", ae=ae, batch=3, frames=4, num_keys=K, device=CPU, seed=0, data=str(folder),
                         spec=StoreSpec(trajectories=2, length=8, refresh_every=0))  # fmt: skip
    z, keys = data.next()
    assert z.shape == (3, 4, *data.store.z.shape[2:]) and keys.shape == (3, 4, K)
    assert data.describe() == {"source": "store", "trajectories": 2, "length": 8, "refresh_every": 0,
                               "refresh_fraction": 0.05, "rendered": 2}  # fmt: skip


def test_game_source_trajectories_are_one_continuous_episode():
    """A trajectory longer than a render chunk is one episode: frame for frame the game's own continuous
    run from the trajectory's spawn, with no respawn where a chunk ends."""
    pytest.importorskip("worldsim.game")
    from worldsim.data.loader import GameClips

    n, L = 2, 2 * RENDER_CHUNK + 2  # three chunks, the last one cut short
    render = game_source(size=H, device=CPU, seed=0)
    chunks = list(render(n, L))
    assert [c[0].shape[1] for c in chunks] == [RENDER_CHUNK, RENDER_CHUNK, 2]
    frames, keys = (torch.cat(x, 1) for x in zip(*chunks))
    # the same games (the source's first call) running without a respawn for as long as the test looks
    ref = GameClips(batch=n, frames=RENDER_CHUNK, size=H, device=CPU, seed=1, level="default",
                    episode_frames=10**9)  # fmt: skip
    want = [ref.next_clip() for _ in range(3)]
    assert not any(ref.respawned for _ in [ref.next_clip()])  # still the first episode
    want_f, want_k = (torch.cat(x, 1)[:, :L] for x in zip(*want))
    assert torch.equal(frames, want_f) and torch.equal(keys, want_k)
    # and a game whose episodes end every chunk does differ after the first chunk (the test can tell)
    cut = GameClips(batch=n, frames=RENDER_CHUNK, size=H, device=CPU, seed=1, level="default",
                    episode_frames=RENDER_CHUNK)  # fmt: skip
    cut_f = torch.cat([cut.next_clip()[0] for _ in range(2)], 1)
    assert torch.equal(cut_f[:, :RENDER_CHUNK], frames[:, :RENDER_CHUNK])
    assert not torch.equal(cut_f[:, RENDER_CHUNK:], frames[:, RENDER_CHUNK : 2 * RENDER_CHUNK])
    # the next call starts new games: other spawns
    again, _ = next(render(n, L))
    assert not torch.equal(again[:, 0], frames[:, 0])


def test_teacher_trains_on_a_dataset_with_the_default_store_flags(ae_path, dataset, tmp_path):
    """`--data DIR` alone: the store's trajectories are the dataset's clips, as long as they were recorded
    (the device default, 256 frames on a CPU, is longer than `worldsim collect`'s default 32-frame clips)."""
    from models import train_args

    from worldsim.train import teacher

    folder, ds = dataset
    p = argparse.ArgumentParser()
    add_store_arguments(p)
    assert store_spec(p.parse_args(["--data", str(folder)]), CPU, clip=6).length == ds.frames
    assert store_spec(p.parse_args(["--data", str(folder), "--store-length", "5"]), CPU, clip=4).length == 5
    m = teacher.train(train_args(teacher, tmp_path, autoencoder=ae_path, data=folder, steps=2, batch=2))
    assert m["steps"] == 2 and m["data"]["source"] == "store" and m["data"]["length"] == ds.frames
