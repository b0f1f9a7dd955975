import pytest
import torch

from worldsim.evaluation.idm import IDM, accuracy, effective_keys, get_idm, load_idm, save_idm, train_idm
from worldsim.world import KEY_NAMES


def test_effective_keys_cancel_opposite_pairs_only():
    i = {n: j for j, n in enumerate(KEY_NAMES)}
    k = torch.zeros(3, len(KEY_NAMES), dtype=torch.bool)
    k[0, [i["forward"], i["back"], i["turn_left"]]] = True  # forward + back cancel, the turn stays
    k[1, [i["strafe_left"], i["turn_right"]]] = True
    k[2, [i["turn_left"], i["turn_right"], i["forward"]]] = True
    e = effective_keys(k, KEY_NAMES)
    assert e[0].nonzero().flatten().tolist() == [i["turn_left"]]
    assert torch.equal(e[1], k[1])
    assert e[2].nonzero().flatten().tolist() == [i["forward"]]


def test_accuracy_counts_keys_and_exact_matches_on_valid_pairs():
    keys = torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    logits = torch.tensor([[2.0, -1.0], [3.0, 1.0], [-1.0, -1.0]])  # right, half right, all wrong
    a = accuracy(logits, keys)
    assert a == {"per_key": 0.5, "exact": round(1 / 3, 4), "pairs": 3}
    assert accuracy(logits, keys, torch.tensor([True, True, False]))["per_key"] == 0.75


def test_idm_learns_turns_from_the_real_game():
    """A short training run already reads the turn keys above chance on held-out real frames."""
    model, result = train_idm((32, 32), steps=600, batch=32, seed=0)
    assert result["pairs"] > 0 and result["per_key"] > 0.8
    from worldsim.data import Explorer
    from worldsim.evaluation.idm import _pairs
    from worldsim.game import GameWorld

    game = GameWorld(batch_size=32, size=32)
    game.reset(list(range(900, 932)))
    right = n = chance = 0
    with torch.no_grad():
        for prev, cur, k, valid in _pairs(game, Explorer(32, 6, 5), 24):
            turn = k[:, 4:6]
            p = model(prev, cur)[:, 4:6] > 0
            right += ((p == turn).all(1) & valid).sum().item()
            n += valid.sum().item()
            chance += (~turn.any(1) & valid).sum().item()  # "no turn" is the majority answer
    assert right / n > chance / n + 0.08


def test_cache_round_trip_and_retrain_on_other_keys(tmp_path):
    path = tmp_path / "idm.safetensors"
    model, info = get_idm((32, 32), KEY_NAMES, path=path, steps=3)
    assert path.is_file() and info["size"] == [32, 32] and info["key_names"] == list(KEY_NAMES)
    mtime = path.stat().st_mtime_ns
    again, info2 = get_idm((32, 32), KEY_NAMES, path=path, steps=3)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(model(x, x), again(x, x))
    get_idm((32, 32), KEY_NAMES[:4], path=path, steps=3)  # another key set: retrained and overwritten
    assert load_idm(path)[1]["key_names"] == list(KEY_NAMES[:4])


def test_load_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "x.safetensors"
    save_idm(IDM(6), path, {"size": [32, 32], "key_names": list(KEY_NAMES)})
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata={"idm": '{"version": 99}'})
    with pytest.raises(ValueError, match="delete it to retrain"):
        load_idm(path)
