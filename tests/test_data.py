"""Explorer, dataset folders and make_loader: shapes, dtypes, determinism, windows, errors."""

import json

import numpy as np
import pytest
import torch

from worldsim.data import Dataset, DatasetWriter, Explorer, make_loader
from worldsim.errors import UserError
from worldsim.world import KEY_NAMES


def test_explorer_uses_every_key_sticky_and_deterministic():
    e = Explorer(8, len(KEY_NAMES), seed=3)
    keys = torch.stack([e.act() for _ in range(300)])  # [T, B, K]
    assert keys.dtype == torch.bool and keys.shape == (300, 8, 6)
    assert keys.any(dim=(0, 1)).all(), "every key is pressed at some point"
    changes = (keys[1:] != keys[:-1]).float().mean().item()
    assert changes < 0.2, f"keys are sticky, not resampled every frame (changed {changes:.2f})"
    assert keys[:, :, 0].float().mean() > keys[:, :, 1].float().mean(), "forward-biased"
    again = Explorer(8, len(KEY_NAMES), seed=3)
    assert torch.equal(torch.stack([again.act() for _ in range(300)]), keys)
    other = Explorer(8, len(KEY_NAMES), seed=4)
    assert not torch.equal(torch.stack([other.act() for _ in range(300)]), keys)


def test_explorer_turns_when_blocked():
    e = Explorer(64, len(KEY_NAMES), seed=0)
    for _ in range(5):
        e.act()
    blocked = torch.zeros(64, dtype=torch.bool)
    blocked[::2] = True
    k = e.act(blocked)
    turn = k[:, [KEY_NAMES.index("turn_left"), KEY_NAMES.index("turn_right")]]
    assert (turn[::2].sum(1) == 1).all() and not k[::2, :4].any(), "blocked games only turn"
    assert torch.equal(e.act()[::2], k[::2]), "and keep turning for a while"
    # Keys without turn names: a blocked game gets a fresh random key state instead.
    g = Explorer(4, 3, seed=0)
    assert g.act(torch.ones(4, dtype=torch.bool)).shape == (4, 3)


def _dataset(path, n=5, f=10, h=6, w=8, k=3, per_shard=2):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, f, h, w, 3), dtype=np.uint8)
    keys = rng.random((n, f, k)) < 0.3
    wr = DatasetWriter(
        path, key_names=["a", "b", "c"], height=h, width=w, frames=f, source="test", clips_per_shard=per_shard
    )
    wr.add(frames[:3], keys[:3])
    wr.add(torch.from_numpy(frames[3:]), torch.from_numpy(keys[3:]).to(torch.uint8))
    wr.close()
    return frames, keys


def test_dataset_round_trip_across_shards(tmp_path):
    frames, keys = _dataset(tmp_path / "ds")
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["count"] == 5 and [s["clips"] for s in meta["shards"]] == [2, 2, 1]
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 5 and ds.key_names == ["a", "b", "c"]
    for i in range(5):
        f, k = ds.clip(i)
        assert np.array_equal(f, frames[i]) and np.array_equal(k, keys[i]) and k.dtype == bool
    f, k = ds.clip(3, start=4, length=3)
    assert np.array_equal(f, frames[3, 4:7])
    with pytest.raises(UserError, match="already holds a dataset"):
        DatasetWriter(tmp_path / "ds", key_names=["a"], height=1, width=1, frames=1, source="x")


def test_loader_from_dataset_shapes_windows_determinism(tmp_path):
    frames, keys = _dataset(tmp_path / "ds")
    it = make_loader(str(tmp_path / "ds"), batch=4, frames=3, size=6, seed=7)
    batches = [next(it) for _ in range(20)]
    f, k = batches[0]
    assert f.shape == (4, 3, 6, 6, 3) and f.dtype == torch.uint8  # 6x8 -> 6x6: resized to `size`
    assert k.shape == (4, 3, 3) and k.dtype == torch.bool
    again = make_loader(str(tmp_path / "ds"), batch=4, frames=3, size=6, seed=7)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(batches, (next(again) for _ in range(20)))
    )
    # At native size every yielded window is a real window of a real clip, and windows start anywhere.
    native = make_loader(str(tmp_path / "ds"), batch=2, frames=4, size=6, seed=0)
    assert next(native)[0].shape == (2, 4, 6, 6, 3)
    wr = DatasetWriter(tmp_path / "sq", key_names=["a", "b", "c"], height=6, width=6, frames=10, source="t")
    wr.add(frames[:, :, :, :6], keys)
    wr.close()
    starts = set()
    for f, k in (
        next(make_loader(str(tmp_path / "sq"), batch=8, frames=3, size=6, seed=s)) for s in range(6)
    ):
        for b in range(8):
            hits = [
                (i, t)
                for i in range(5)
                for t in range(8)
                if np.array_equal(f[b].numpy(), frames[i, t : t + 3, :, :6])
            ]
            assert hits, "window not found in the dataset"
            i, t = hits[0]
            assert np.array_equal(k[b].numpy(), keys[i, t : t + 3])
            starts.add(t)
    assert len(starts) >= 4


def test_loader_errors_name_the_problem(tmp_path):
    _dataset(tmp_path / "ds")
    with pytest.raises(UserError, match="frames=11 is longer than the dataset's clips"):
        make_loader(str(tmp_path / "ds"), batch=1, frames=11, size=6)
    with pytest.raises(UserError, match="neither 'game' nor a dataset folder"):
        make_loader(str(tmp_path / "nope"), batch=1, frames=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no meta.json"):
        make_loader(str(tmp_path / "empty"), batch=1, frames=1)
    # a v1 folder (raw .npy shards) still reads, and its shape errors name the file
    v1 = tmp_path / "v1"
    v1.mkdir()
    np.save(v1 / "s-frames.npy", np.zeros((2, 10, 6, 8, 3), np.uint8))
    np.save(v1 / "s-keys.npy", np.zeros((2, 10, 4), bool))
    meta = {"format": "worldsim-dataset", "version": 1, "key_names": ["a", "b", "c"], "height": 6, "width": 8,
            "frames": 10, "source": "t", "count": 2,
            "shards": [{"frames": "s-frames.npy", "keys": "s-keys.npy", "clips": 2}]}  # fmt: skip
    (v1 / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"s-keys.npy: expected bool \[N, 10, 3\]"):
        Dataset(v1)
    np.save(v1 / "s-keys.npy", np.ones((2, 10, 3), bool))
    ds = Dataset(v1)
    assert ds.clip(1)[1].all() and ds.episodes(1)[0].tolist() == [1] * 10 and not ds.episodes(1)[1].any()


def test_game_loader_shapes_dtypes_determinism():
    pytest.importorskip("worldsim.game")
    it = make_loader("game", batch=3, frames=6, size=32, seed=5)
    f, k = next(it)
    assert f.shape == (3, 6, 32, 32, 3) and f.dtype == torch.uint8 and f.device.type == "cpu"
    assert k.shape == (3, 6, len(KEY_NAMES)) and k.dtype == torch.bool
    f2, _ = next(it)
    assert not torch.equal(f, f2)
    g, kk = next(make_loader("game", batch=3, frames=6, size=32, seed=5))
    assert torch.equal(f, g) and torch.equal(k, kk)
    h, _ = next(make_loader("game", batch=3, frames=6, size=32, seed=6))
    assert not torch.equal(f, h)


def test_game_clips_continue_episodes_and_respawn_anywhere():
    game = pytest.importorskip("worldsim.game")
    from worldsim.data import GameClips

    clips = GameClips(batch=2, frames=5, size=24, device="cpu", seed=1, level="default", episode_frames=10)
    world = game.GameWorld(batch_size=2, size=24)
    seen, spawns = [], []
    for _ in range(4):
        f, k = clips.next_clip()
        seen.append((clips.clip_index, clips.respawned, clips.episode_start))
        if clips.respawned:
            world.place(*clips.poses)
            spawns.append(clips.poses[0])
        for t in range(5):  # keys[:, t] is the key state that produced frames[:, t], clip after clip
            assert torch.equal(world.step(k[:, t]), f[:, t])
    assert seen == [(0, True, 0), (1, False, 0), (2, True, 2), (3, False, 2)]
    assert not torch.equal(spawns[0], spawns[1]), "each episode starts at new poses"
    with pytest.raises(UserError, match="episode_frames must be >= 1"):
        GameClips(batch=1, frames=5, size=24, device="cpu", seed=1, level="default", episode_frames=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_game_loader_on_cuda():
    pytest.importorskip("worldsim.game")
    f, k = next(make_loader("game", batch=2, frames=3, size=32, device="cuda"))
    assert f.device.type == "cuda" and k.device.type == "cuda" and f.shape == (2, 3, 32, 32, 3)
