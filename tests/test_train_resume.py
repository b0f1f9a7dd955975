"""A teacher run stopped at step n (`--stop-after n`) and resumed from its compact state alone reaches 2n on
the uninterrupted run's LR schedule, with an EMA validation loss within noise of it; the compact state's
files, sizes and precision."""

import json
import shutil

import pytest
import torch
from models import train_args

from worldsim.checkpoint import MAX_FILE_BYTES, load_checkpoint
from worldsim.errors import UserError
from worldsim.train import resume, teacher

N = 100  # steps before the stop; the runs go to 2N
RUN = dict(steps=2 * N, batch=4, lr=3e-3, log_every=10, store_trajectories=8, store_length=32)
# Run-to-run noise of the final EMA validation loss at step 2N (this RUN, CPU): 4 seeds of uninterrupted
# runs spread over 1.02-1.16 (range 0.14); a run stopped at N and resumed from the compact state ended
# 0.007-0.082 from the uninterrupted run of its seed. A resume that lost the weights or the schedule ends
# near the 60-step loss (~1.35) or the untrained one, far outside.
VAL_TOLERANCE = 0.15


def _rows(out):
    return [json.loads(line) for line in (out / resume.METRICS_FILE).read_text().splitlines()]


def _lr_by_step(out):
    return {r["step"]: r["lr"] for r in _rows(out) if "lr" in r}


@pytest.fixture(scope="module")
def runs(ae_path, tmp_path_factory):
    """(uninterrupted folder, stopped folder, resumed folder, their metrics)."""
    whole, stopped, resumed = (tmp_path_factory.mktemp(n) for n in ("whole", "stopped", "resumed"))
    m_whole = teacher.train(train_args(teacher, whole, autoencoder=ae_path, **RUN))
    m_stop = teacher.train(train_args(teacher, stopped, autoencoder=ae_path, stop_after=N, **RUN))
    # Only the compact files travel (as they would off a GPU machine): the resume cannot see teacher.pt.
    copied = sorted(p.name for p in stopped.glob("teacher.state*.safetensors"))
    for name in copied:
        shutil.copy(stopped / name, resumed / name)
    m_res = teacher.train(train_args(teacher, resumed, steps=2 * N, resume=True))
    return whole, stopped, resumed, {"whole": m_whole, "stopped": m_stop, "resumed": m_res, "copied": copied}


def test_stop_after_stops_on_the_full_schedule(runs):
    whole, stopped, _, m = runs
    state = torch.load(stopped / "teacher.pt", weights_only=True)
    assert state["step"] == N and m["stopped"]["steps"] == N
    assert state["schedule_total"] == 2 * N  # the LR schedule spans --steps, not --stop-after
    lr_whole, lr_stop = _lr_by_step(whole), _lr_by_step(stopped)
    assert max(lr_stop) == N
    assert all(lr_stop[s] == pytest.approx(lr_whole[s], rel=1e-9) for s in lr_stop)


def test_resume_from_compact_state_follows_the_uninterrupted_run(runs):
    whole, _, resumed, m = runs
    assert m["copied"] == ["teacher.state.safetensors"]  # the test preset's state fits one file
    state = torch.load(resumed / "teacher.pt", weights_only=True)
    assert state["step"] == 2 * N and m["resumed"]["steps"] == 2 * N
    whole_state = torch.load(whole / "teacher.pt", weights_only=True)
    assert state["history"]["step"] == whole_state["history"]["step"]  # the stopped run's history came along

    lr_whole, lr_res = _lr_by_step(whole), _lr_by_step(resumed)
    assert min(lr_res) > N  # this folder's metrics start after the stop
    # row `s` logs the LR of the step that took the model from s-1 to s
    rewarm = {s for s in lr_res if s - 1 < N + resume.REWARM_STEPS}
    after = set(lr_res) - rewarm
    assert rewarm and len(after) >= 5
    for s in rewarm:  # no optimizer moments in the compact state: a lower LR while AdamW re-estimates them
        assert lr_res[s] < lr_whole[s], (s, lr_res[s], lr_whole[s])
    for s in after:  # then the uninterrupted run's schedule, step for step
        assert lr_res[s] == pytest.approx(lr_whole[s], rel=1e-9), s

    v_whole, v_res = m["whole"]["ema_val_loss"], m["resumed"]["ema_val_loss"]
    assert abs(v_res - v_whole) < VAL_TOLERANCE, (v_res, v_whole)
    assert v_res < state["evals"][0][1] - 2 * VAL_TOLERANCE  # and both learned: far below the untrained loss


def test_budget_adds_up_over_the_two_runs(runs):
    _, _, resumed, m = runs
    card = json.loads((resumed / "teacher.json").read_text())
    budget = card["budget"]
    assert budget["steps"] == 2 * N and budget["clips"] == 2 * N * RUN["batch"] and budget["runs"] == 2
    assert m["stopped"]["budget"]["runs"] == 1 and m["stopped"]["budget"]["steps"] == N
    assert budget["device_minutes"]["cpu"] >= m["stopped"]["budget"]["device_minutes"]["cpu"]
    # the compact state carries it too (the next resume adds to it)
    assert resume.load_compact(resume.compact_path(resumed, "teacher"))["budget"] == budget


def test_resume_in_a_folder_without_a_state_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="--resume: no train state"):
        teacher.train(train_args(teacher, tmp_path / "empty", steps=2, resume=True))
    assert not (tmp_path / "empty").exists()  # and the failed start left no folder


# ---------------------------------------------------------------------------------------------------
# The compact state itself, on the tiny checkpoint's real weights
# ---------------------------------------------------------------------------------------------------


def _int8_rows(w: torch.Tensor) -> torch.Tensor:
    """`w` as the shipped 8-bit format stores it: symmetric int8 per row, scale max|row| / 127."""
    scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
    scale = scale.view(-1, *[1] * (w.dim() - 1))
    return (w / scale).round().clamp(-127, 127) * scale


@pytest.fixture(scope="module")
def tiny_compact(tmp_path_factory):
    """The compact state of a tiny teacher trained on (its EMA nudged off the shipped int8 grid, where
    requantizing would be exact) whose training weights moved off its EMA by ~1e-3."""
    ckpt = load_checkpoint("tiny")
    g = torch.Generator().manual_seed(0)

    def nudge(state, size):
        return {k: v + size * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                for k, v in state.items()}  # fmt: skip

    ema = nudge(ckpt.float_state("dit"), 1e-4)
    model = nudge(ema, 1e-3)
    ae = ckpt.float_state("autoencoder")
    path = tmp_path_factory.mktemp("compact") / f"teacher{resume.COMPACT_SUFFIX}"
    meta = {"kind": "teacher", "step": 7, "budget": {"steps": 7, "runs": 1}}
    resume.save_compact(path, config=ckpt.config, model=model, ema=ema, frozen={"autoencoder": ae}, meta=meta)
    return path, ckpt, model, ema, ae


def test_compact_state_files_fit_the_per_file_budget(tiny_compact):
    path, *_ = tiny_compact
    files = sorted(path.parent.glob("teacher.state*.safetensors"))
    sizes = [f.stat().st_size for f in files]
    assert len(files) >= 2 and sum(sizes) > MAX_FILE_BYTES  # the tiny teacher needs parts (~16.9 MB)...
    assert max(sizes) <= MAX_FILE_BYTES, sizes  # ...each within 16 MiB
    assert sum(sizes) < 4 * sum(v.numel() for v in tiny_compact[2].values())  # far below the fp32 weights


def test_compact_state_round_trip(tiny_compact):
    path, ckpt, model, ema, ae = tiny_compact
    state = resume.load_compact(path)
    assert state["step"] == 7 and state["opt"] is None and state["config"] == ckpt.config.to_dict()
    assert set(state["ema"]) == set(ema) and set(state["model"]) == set(model)
    quantized = 0
    for k, v in ema.items():
        got = state["ema"][k]
        if v.is_floating_point() and v.dim() >= 2 and v.numel() >= 4096:
            # exactly as the shipped 8-bit format stores it (the fp32 products of int8 x scale)
            torch.testing.assert_close(got, _int8_rows(v), rtol=1e-6, atol=0)
            quantized += 1
        else:
            assert torch.equal(got, v), k
        # the training weights: the stored EMA + an int8 difference from it, so off by at most half an
        # int8 step of that difference (not of the weights themselves)
        d = model[k] - got
        step = d.abs().flatten(1).amax(1) / 127 if d.dim() >= 2 else torch.zeros(())
        err = (state["model"][k] - model[k]).abs()
        bound = (step.view(-1, *[1] * (d.dim() - 1)) if d.dim() >= 2 else step) / 2 + 1e-6
        assert (err <= bound).all(), (k, err.max().item())
    assert quantized > 10
    for k, v in ae.items():  # the frozen autoencoder: matrices bf16, the rest exact
        want = v.to(torch.bfloat16).float() if v.dim() >= 2 else v
        assert torch.equal(state["autoencoder"][k], want), k


def test_a_checkpoint_is_not_a_compact_state():
    with pytest.raises(UserError, match="not a compact train state"):
        resume.load_compact(load_checkpoint("tiny").path)


def test_export_from_the_compact_state(runs, tmp_path):
    from worldsim.train.export import export

    _, stopped, _, _ = runs
    compact = resume.load_compact(resume.compact_path(stopped, "teacher"))
    full = torch.load(stopped / "teacher.pt", weights_only=True)
    path = export(resume.compact_path(stopped, "teacher"), tmp_path / "from-compact.safetensors")
    ck = load_checkpoint(path)
    assert ck.config.to_dict() == full["config"] and ck.metrics["teacher"] == full["metrics"]
    for k, v in compact["ema"].items():  # the compact EMA, matrices stored in bf16 as every export
        want = v.to(torch.bfloat16) if v.is_floating_point() and v.ndim >= 2 else v
        assert torch.equal(ck.tensors["dit"][k], want), k
        w = full["ema"][k]
        if not (w.is_floating_point() and w.ndim >= 2):
            assert torch.equal(v, w), k  # vectors travel exact
            continue
        # matrices: within half an int8 step (max|row| / 254) of the full state's EMA, then bf16's 2^-8
        row = w.abs().flatten(1).amax(1, keepdim=True)
        err = (ck.tensors["dit"][k].float() - w).abs().flatten(1)
        assert (err <= row * (1 / 254 + 2**-8) + 1e-7).all(), k
    assert path.with_suffix(".md").is_file()
