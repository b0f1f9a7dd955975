import json
import math

import numpy as np
import pytest
import torch

from worldsim.evaluation.metrics import psnr, ssim


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: a second intra-op thread only adds contention (10x slower when the cores are busy).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ssim_reference(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Direct SSIM: an explicit 2-D gaussian window at every valid position, per channel."""
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for c in range(3):
        for i in range(x.shape[0] - size + 1):
            for j in range(x.shape[1] - size + 1):
                px, py = x[i : i + size, j : j + size, c], y[i : i + size, j : j + size, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
                cxy = (w * px * py).sum() - mx * my
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_reference_and_orders_noise():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (1, 20, 24, 3), dtype=torch.uint8, generator=g)
    smooth = torch.nn.functional.avg_pool2d(a.permute(0, 3, 1, 2).float(), 3, 1, 1).permute(0, 2, 3, 1)
    b = smooth.round().to(torch.uint8)
    assert ssim(a, b).item() == pytest.approx(_ssim_reference(a[0].numpy(), b[0].numpy()), abs=1e-5)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    noisy = [
        (a.float() + s * torch.randn(a.shape, generator=g)).clamp(0, 255).to(torch.uint8) for s in (5, 20, 60)
    ]
    s_vals = [ssim(a, n).item() for n in noisy]
    p_vals = [psnr(a, n).item() for n in noisy]
    assert s_vals[0] > s_vals[1] > s_vals[2] and p_vals[0] > p_vals[1] > p_vals[2]
    assert psnr(a, a).item() == 100.0
    mse = (a.float() - noisy[1].float()).pow(2).mean().item()
    assert p_vals[1] == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-5)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised `test` model with start latents, saved as a shipped checkpoint."""
    from worldsim.checkpoint import save_checkpoint
    from worldsim.model import DiT, get_preset
    from worldsim.model.autoencoder import Autoencoder
    from worldsim.train.export import start_latents

    torch.manual_seed(0)
    cfg = get_preset("test")
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    with torch.no_grad():  # adaLN-Zero starts at zero output: perturb so the model does something
        for p in dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    _, z = start_latents(ae, [0, 1])
    path = tmp_path_factory.mktemp("ckpt") / "random-test.safetensors"
    save_checkpoint(path, config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(), start_latents=z)
    return path


def test_quick_eval_cli_writes_schema_with_real_numbers(random_checkpoint, tmp_path, capsys):
    from worldsim.cli import main

    out, js = tmp_path / "eval", tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(random_checkpoint), "--quick", "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--json", str(js), "--idle-frames", "24"]) == 0
    r = json.loads(js.read_text())
    horizons = ["1", "8", "32", "128"]
    for name in ("psnr", "ssim"):
        assert list(r[name]) == horizons and list(r["baseline_copy_last"][name]) == horizons
    assert all(0 < r["psnr"][h] < 100 and -1 <= r["ssim"][h] <= 1 for h in horizons)
    # the copy-last baseline is near the real frame at 1 step and drifts as the explorer walks away
    base = r["baseline_copy_last"]["psnr"]
    assert base["1"] > base["128"]
    idle = r["idle"]
    assert idle["frames"] == 24 and isinstance(idle["in_range"], bool) and isinstance(idle["collapsed"], bool)
    assert r["checkpoint"] == str(random_checkpoint) and r["device"] == "cpu" and r["seconds"] > 0
    assert r["sequences"] == 4 and r["quick"] is True
    assert (out / "psnr_vs_horizon.png").stat().st_size > 1000
    mp4 = (out / "real_vs_generated.mp4").read_bytes()
    assert mp4[4:8] == b"ftyp" and len(mp4) > 1000
    assert "copy-last PSNR" in capsys.readouterr().out


def test_eval_refuses_bad_flags(random_checkpoint):
    from worldsim.cli import main

    assert main(["eval", "--checkpoint", str(random_checkpoint), "--steps", "0", "--device", "cpu"]) == 2
    assert main(["eval", "--checkpoint", "no-such-checkpoint", "--device", "cpu"]) == 2
