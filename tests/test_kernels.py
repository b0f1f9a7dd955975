"""Triton kernels against their PyTorch references (TRITON_INTERPRET=1 on CPU, the real kernels on CUDA)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined (@triton.jit)

pytest.importorskip("triton")

import kernels  # noqa: E402
from kernels import adaln_layernorm, adaln_layernorm_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((2, 1, 8, 32), torch.float32), ((1, 3, 16, 48), torch.float32), ((3, 1, 64, 256), torch.bfloat16)],
)
def test_adaln_layernorm_matches_reference(shape, dtype):
    B, F, N, D = shape
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(B, F, N, D, generator=g) * 3 + 1).to(DEVICE, dtype)
    mod = torch.randn(B, F, 1, 6, D, generator=g).to(DEVICE, dtype)  # as dit.Block slices it
    shift, scale = mod.unbind(3)[0], mod.unbind(3)[1]  # [B,F,1,D] strided views
    assert kernels.available(x)
    got = adaln_layernorm(x, shift, scale)
    want = adaln_layernorm_reference(x.float(), shift.float(), scale.float())  # fp32 truth
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


def test_adaln_layernorm_rejects_bad_modulation():
    x = torch.randn(1, 2, 8, 32, device=DEVICE)
    with pytest.raises(ValueError, match="shift must be"):
        adaln_layernorm(x, torch.zeros(1, 1, 1, 32, device=DEVICE), torch.zeros(1, 2, 1, 32, device=DEVICE))
