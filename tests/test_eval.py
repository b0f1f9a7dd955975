import json
import math

import numpy as np
import pytest
import torch

from worldsim.metrics import psnr, ssim


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
    from models import random_checkpoint

    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random-test.safetensors")


def test_quick_eval_cli_writes_schema_with_real_numbers(random_checkpoint, tmp_path, capsys):
    from worldsim.cli import main

    out, js = tmp_path / "eval", tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(random_checkpoint), "--quick", "--device", "cpu"]
    idm = tmp_path / "idm.safetensors"
    extra = ["--idle-frames", "24", "--idm", str(idm), "--idm-steps", "5", "--long-frames", "40"]
    assert main([*argv, "--out", str(out), "--json", str(js), *extra]) == 0
    r = json.loads(js.read_text())
    horizons = ["1", "8", "32", "128"]
    for name in ("psnr", "ssim"):
        assert list(r[name]) == horizons and list(r["baseline_copy_last"][name]) == horizons
    assert all(0 < r["psnr"][h] < 100 and -1 <= r["ssim"][h] <= 1 for h in horizons)
    # the copy-last baseline is near the real frame at 1 step and drifts as the explorer walks away
    base = r["baseline_copy_last"]["psnr"]
    assert base["1"] > base["128"]
    margin = r["margin_over_copy_last"]
    assert all(margin[h] == pytest.approx(r["psnr"][h] - base[h], abs=1e-9) for h in horizons)
    # a random model is scored as what it is: below the targets, every horizon with its one-line verdict
    assert list(r["verdict"]) == horizons and r["pass"]["all"] is False
    assert all(line.startswith(("pass", "FAIL")) for line in r["verdict"].values())
    assert list(r["motion"]["ratio_by_horizon"]) == horizons and r["motion"]["ratio"] > 0
    assert list(r["contrast"]["ratio_by_horizon"]) == horizons and r["contrast"]["ratio"] > 0
    assert r["contrast"]["brightness_error"] >= 0
    control = r["controllability"]
    assert list(control["margin_db"]) == horizons and isinstance(control["pass"], bool)
    idle = r["idle"]
    assert idle["frames"] == 24 and isinstance(idle["in_range"], bool) and isinstance(idle["collapsed"], bool)
    assert idle["pass"] is False and idle["psnr_last"] == idle["psnr_last_vs_start"] < 30
    assert list(idle["psnr_curve"]) == ["1", "24"] and idle["drift_frames"] == 24
    assert r["checkpoint"] == str(random_checkpoint) and r["device"] == "cpu" and r["seconds"] > 0
    # where the time went: every part timed, together no more than the whole run
    parts = r["seconds_by_part"]
    assert list(parts) == ["rollouts", "loop", "long_run", "files"] and parts["rollouts"] > 0
    assert sum(parts.values()) <= r["seconds"] + 0.2
    assert r["sequences"] == 4 and r["quick"] is True and r["dtype"] == "float32"  # fp32 on a CPU by default
    assert (out / "psnr_vs_horizon.png").stat().st_size > 1000
    mp4 = (out / "real_vs_generated.mp4").read_bytes()
    assert mp4[4:8] == b"ftyp" and len(mp4) > 1000
    printed = capsys.readouterr().out
    assert "copy-last PSNR" in printed and "margin dB" in printed and "  128 frames: FAIL" in printed
    assert "contrast: generated frames have" in printed
    # action following: the IDM (trained on the real game, cached) read on real and on generated pairs
    acc = r["action_accuracy"]
    assert idm.is_file() and acc["frames"] == 128
    for who in ("real", "generated"):
        assert 0 <= acc[who]["per_key"] <= 1 and 0 <= acc[who]["exact"] <= acc[who]["per_key"]
        assert 0 < acc[who]["pairs"] <= 4 * 128
    # loop: a 180 degree turn and back returns the real view exactly; the model is compared to it
    loop = r["loop"]
    assert loop["frames_each_way"] == 36
    assert loop["turn_180_and_back"]["real_psnr_end_vs_start"] == 100.0
    assert 0 < loop["turn_180_and_back"]["psnr_end_vs_real"] < 100
    assert 0 < loop["walk_and_back"]["psnr_mid_vs_real"] < 100
    assert (out / "loop.png").stat().st_size > 1000
    # long run (40 frames here): per-minute statistics next to the real game's, NaN check
    lr = r["long_run"]
    assert lr["frames"] == 40 and lr["nan"] is False and len(lr["per_minute"]) == 1
    m = lr["per_minute"][0]
    assert m["frames"] == 40 and m["real_mean"][0] <= m["real_mean"][1] and isinstance(m["in_range"], bool)
    assert (out / "long_run.png").stat().st_size > 1000


def test_eval_runs_the_world_in_the_dtype_asked_for(random_checkpoint, tmp_path):
    from worldsim.cli import main

    js = tmp_path / "bf16.json"
    argv = ["eval", "--checkpoint", str(random_checkpoint), "--quick", "--device", "cpu", "--dtype", "bf16"]
    extra = ["--idle-frames", "4", "--long-frames", "0", "--no-loop", "--no-action", "--sequences", "1"]
    assert main([*argv, *extra, "--out", str(tmp_path / "e"), "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["dtype"] == "bfloat16" and all(0 < v < 100 for v in r["psnr"].values())


def test_compare_plots_several_eval_jsons(tmp_path, capsys):
    from worldsim.cli import main

    def fake_eval(offset):  # eval JSONs as `worldsim eval` writes them (the plot reads psnr/ssim/baseline)
        hs = ["1", "8", "32"]
        return {
            "psnr": {h: 30.0 - offset - int(h) / 4 for h in hs},
            "ssim": {h: 0.9 - offset / 100 for h in hs},
            "baseline_copy_last": {"psnr": {h: 20.0 for h in hs}, "ssim": {h: 0.5 for h in hs}},
        }

    paths = []
    for name, off in (("student", 0), ("baseline", 3)):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(fake_eval(off)))
        paths.append(f"{name}={p}")
    assert main(["eval", "--compare", *paths, "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "29.75" in out and "19.0" in out  # student at 1 frame, baseline at 32 frames
    assert main(["eval", "--compare", f"x={tmp_path / 'missing.json'}"]) == 2


def test_eval_refuses_bad_flags(random_checkpoint):
    from worldsim.cli import main

    assert main(["eval", "--checkpoint", str(random_checkpoint), "--steps", "0", "--device", "cpu"]) == 2
    assert main(["eval", "--checkpoint", "no-such-checkpoint", "--device", "cpu"]) == 2
