import pytest
import torch

from worldsim.world import KEY_NAMES, keys_tensor, normalize_seeds


def test_keys_tensor_accepts_uint8_and_bool():
    k = keys_tensor(torch.tensor([[1, 0, 0, 0, 0, 1]], dtype=torch.uint8), 1, len(KEY_NAMES))
    assert k.dtype == torch.bool and k.tolist() == [[True, False, False, False, False, True]]


def test_keys_tensor_names_the_shape_problem():
    with pytest.raises(ValueError, match=r"\[B, K\] = \[2, 6\]"):
        keys_tensor(torch.zeros(2, 5, dtype=torch.uint8), 2, 6)
    with pytest.raises(ValueError, match="one row per game"):
        keys_tensor(torch.zeros(3, 6, dtype=torch.uint8), 2, 6)
    with pytest.raises(ValueError, match="dtype"):
        keys_tensor(torch.zeros(1, 6), 1, 6)


def test_normalize_seeds():
    assert normalize_seeds(None, 3) == [0, 1, 2]
    assert normalize_seeds(10, 2) == [10, 11]
    with pytest.raises(ValueError, match="one seed per game"):
        normalize_seeds([1, 2], 3)
