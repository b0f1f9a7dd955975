"""Dataset format v2: compressed shards with checksums, episodes recorded, a split that never trains on a
held-out episode, and decoded shards held within a memory budget."""

import json

import numpy as np
import pytest

from worldsim.data import Dataset, DatasetWriter
from worldsim.errors import UserError


def _write(path, n=10, f=4, episode_len=6, per_shard=3, **kw):
    """n clips of f frames cut from one stream of episodes of `episode_len` frames."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, f, 8, 8, 3), dtype=np.uint8)
    keys = rng.random((n, f, 2)) < 0.5
    t = np.arange(n * f).reshape(n, f)
    episode, reset = t // episode_len, t % episode_len == 0
    wr = DatasetWriter(path, key_names=["a", "b"], height=8, width=8, frames=f, source="test",
                       clips_per_shard=per_shard, extra={"env": "Test-v0", "seed": 3})  # fmt: skip
    wr.add(frames, keys, episode, reset)
    wr.close()
    return frames, keys, episode, reset


def test_v2_round_trip_manifest_and_episodes(tmp_path):
    frames, keys, episode, reset = _write(tmp_path / "ds")
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["version"] == 2 and meta["env"] == "Test-v0" and meta["seed"] == 3
    assert (meta["count"], meta["frame_count"], meta["episode_count"]) == (10, 40, 7)
    assert [s["clips"] for s in meta["shards"]] == [3, 3, 3, 1]
    assert all(s["file"].endswith(".npz") and len(s["sha256"]) == 64 for s in meta["shards"])
    ds = Dataset(tmp_path / "ds")
    for i in range(10):
        f, k = ds.clip(i)
        assert np.array_equal(f, frames[i]) and np.array_equal(k, keys[i])
        e, r = ds.episodes(i)
        assert np.array_equal(e, episode[i]) and np.array_equal(r, reset[i])
    assert ds.manifest["env"] == "Test-v0" and "shards" not in ds.manifest
    with pytest.raises(IndexError):
        ds.clip(10)


def test_split_never_trains_on_a_heldout_episode(tmp_path):
    _write(tmp_path / "ds")
    ds = Dataset(tmp_path / "ds")
    held = ds.split("heldout")
    assert held.tolist() == [9]  # the last tenth
    # clip 9 holds frames 36..39: episode 6 (frames 36..41) begins there, clip 8 (32..35) is episode 5
    assert ds.split("train").tolist() == list(range(9))
    _write(tmp_path / "long", episode_len=8)  # episode 4 = frames 32..39: clips 8 and 9
    ds = Dataset(tmp_path / "long")
    assert ds.split("train").tolist() == list(range(8))
    assert ds.split("heldout").tolist() == [9]


def test_compressed_shards_are_smaller_than_raw(tmp_path):
    wr = DatasetWriter(tmp_path / "flat", key_names=["a"], height=32, width=32, frames=8, source="t")
    frames = np.zeros((4, 8, 32, 32, 3), np.uint8)
    frames[:, :, 10:14, 5:20] = 200  # a flat picture with a bar, like an Atari screen
    wr.add(frames, np.zeros((4, 8, 1), bool))
    wr.close()
    meta = json.loads((tmp_path / "flat" / "meta.json").read_text())
    assert sum(s["bytes"] for s in meta["shards"]) < frames.nbytes / 20


def test_a_cut_or_damaged_shard_names_the_file_and_the_fix(tmp_path):
    _write(tmp_path / "ds")
    shard = tmp_path / "ds" / "shard-00001.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"shard-00001.npz: shard is \d+ bytes, meta.json says \d+ .*collect"):
        Dataset(tmp_path / "ds")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    ds = Dataset(tmp_path / "ds")  # same size: found when the shard is read
    assert np.array_equal(ds.clip(0)[0], Dataset(tmp_path / "ds").clip(0)[0])
    with pytest.raises(UserError, match=r"shard-00001.npz: shard damaged \(sha256"):
        ds.clip(4)
    shard.unlink()
    with pytest.raises(UserError, match="shard-00001.npz: shard missing"):
        Dataset(tmp_path / "ds")


def test_decoded_shards_stay_within_the_budget(tmp_path):
    _write(tmp_path / "ds")
    one_shard = 3 * 4 * (8 * 8 * 3 + 2 + 8 + 1)
    ds = Dataset(tmp_path / "ds", cache_bytes=2 * one_shard)
    for i in (0, 3, 0, 3, 6, 0):  # shards 0, 1, 0, 1, 2 (drops 0), 0 again
        ds.clip(i)
    assert ds.cache.decodes == 4
    whole = Dataset(tmp_path / "ds")
    for i in list(range(10)) * 2:
        whole.clip(i)
    assert whole.cache.decodes == 4  # every shard once


def test_preload_decodes_the_splits_shards_once(tmp_path):
    _write(tmp_path / "ds")  # shards of clips 0-2, 3-5, 6-8, 9
    ds = Dataset(tmp_path / "ds")
    ds.preload(ds.split("heldout"))
    assert ds.cache.decodes == 1 and set(ds.cache._held) == {3}
    ds.preload(ds.split("train"), threads=3)
    assert ds.cache.decodes == 4
    for i in range(10):
        ds.clip(i)
    assert ds.cache.decodes == 4, "every read after the preload is served from memory"
    small = Dataset(tmp_path / "ds", cache_bytes=10)
    small.preload(small.split("train"))  # does not fit: nothing decoded ahead
    assert small.cache.decodes == 0


def test_a_v1_dataset_of_several_shards_reads_every_clip(tmp_path):
    folder = tmp_path / "v1"
    folder.mkdir()
    shards = []
    for s in range(3):
        np.save(folder / f"{s}-f.npy", np.full((2, 3, 4, 4, 3), s, np.uint8))
        np.save(folder / f"{s}-k.npy", np.zeros((2, 3, 1), bool))
        shards.append({"frames": f"{s}-f.npy", "keys": f"{s}-k.npy", "clips": 2})
    meta = {"format": "worldsim-dataset", "version": 1, "key_names": ["a"], "height": 4, "width": 4,
            "frames": 3, "source": "t", "count": 6, "shards": shards}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    ds = Dataset(folder)
    ds.preload(ds.split("train"))
    assert [int(ds.clip(i)[0][0, 0, 0, 0]) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert ds.split("train").tolist() == [0, 1, 2, 3, 4]
