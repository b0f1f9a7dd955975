"""The Triton int8 weight matmul (kernels/w8_matmul.py) against its PyTorch reference (TRITON_INTERPRET=1
on CPU, the real kernel on CUDA), and `Int8Linear` running through it."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel is defined (@triton.jit)

pytest.importorskip("triton")

from worldsim.kernels.w8_matmul import supported, w8_matmul, w8_matmul_reference  # noqa: E402

from worldsim.engine import quant  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def operands(M, K, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).to(DEVICE, dtype)
    w = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8).to(DEVICE)
    scale = (torch.rand(N, generator=g) * 0.02 + 0.001).to(DEVICE)
    bias = torch.randn(N, generator=g).to(DEVICE)
    return x, w, scale, bias


@pytest.mark.parametrize(
    ("M", "K", "N", "dtype"),
    [
        (64, 256, 96, torch.float32),  # tiny's K, several N tiles
        (17, 48, 33, torch.float32),  # ragged M, N and K: every mask
        (64, 128, 64, torch.bfloat16),
        (20, 64, 80, torch.float16),
    ],
)
def test_w8_matmul_matches_reference(M, K, N, dtype):
    x, w, scale, bias = operands(M, K, N, dtype)
    assert supported(x, w)
    got = w8_matmul(x, w, scale, bias)
    want = w8_matmul_reference(x.float(), w, scale, bias)  # fp32 truth
    assert got.dtype == dtype and got.shape == (M, N)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), want, atol=tol * want.abs().max().item(), rtol=tol)
    no_bias = w8_matmul(x, w, scale)
    torch.testing.assert_close(
        no_bias.float(), (want - bias).float(), atol=tol * want.abs().max().item(), rtol=tol
    )


def test_supported_and_shape_errors():
    x, w, scale, _ = operands(8, 32, 16, torch.float32)
    assert not supported(x[:, ::2], w)  # K mismatch
    assert not supported(x.t().contiguous().t(), w)  # not unit stride along K
    assert not supported(x, w.float())
    with pytest.raises(ValueError, match=r"w8_matmul: x must be \[M, K\]"):
        w8_matmul(x[:, :16], w, scale)
    with pytest.raises(ValueError, match="scale and bias must be"):
        w8_matmul(x, w, scale[:3])


@torch.no_grad()
def test_int8_linear_uses_the_kernel_at_listed_shapes(monkeypatch):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48).to(DEVICE)
    q = quant.Int8Linear.from_linear(lin)
    x = torch.randn(2, 16, 64, device=DEVICE)  # M = 32 tokens
    ref = q(x)  # the cast-matmul (no shape listed)
    calls = []
    import worldsim.kernels.w8_matmul as km

    real = km.w8_matmul
    monkeypatch.setattr(km, "w8_matmul", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(quant, "W8_KERNEL_SHAPES", {(32, 64, 48)})
    got = q(x)
    assert calls == [(32, 64)]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    q(torch.randn(3, 64, device=DEVICE))  # M = 3 is not listed: the PyTorch path
    assert len(calls) == 1
