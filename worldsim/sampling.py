"""Flow-matching samplers: one signature, the model as a callable and the schedule as data.

Convention (shared by training, sampling and the student):
    x_t = (1 - t) * x0 + t * noise,   t in [0, 1],   t = 1 is pure noise, t = 0 is data;
    the model predicts the velocity v = noise - x0  (so dx_t/dt = v, and x0 = x_t - t * v).

A sampler is `sampler(model, x, schedule) -> x0` where `model(x_t [B,F,...], t [B,F], n) -> v`, `n` the
index of this model evaluation (0, 1, ...: the pass of the frame, as k-diffusion hands its model the
step), and `schedule` is a 1-D tensor of noise levels from 1 down to 0 (`steps + 1` entries). Per-frame noise
levels are `[B, F]`, so the same model callable serves clips (training) and cached blocks (inference).
Nothing here syncs with the host: schedules are device tensors indexed by Python ints.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Model = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

# ---------------------------------------------------------------------------------------------------
# Schedules (data)
# ---------------------------------------------------------------------------------------------------


def uniform_schedule(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`[steps + 1]` noise levels 1, 1 - 1/steps, ..., 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3 timestep shift: t' = s t / (1 + (s - 1) t); s > 1 spends more of the budget at high noise."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def shifted_schedule(
    steps: int, shift: float = 1.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """A uniform schedule passed through `shift_t` (shift 1 = uniform)."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift_t(uniform_schedule(steps, device), shift)


def make_schedule(
    kind: str, steps: int, shift: float = 1.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """A schedule by name: "uniform" or "shifted" (the names a ModelConfig stores)."""
    if kind == "uniform":
        return uniform_schedule(steps, device)
    if kind == "shifted":
        return shifted_schedule(steps, shift, device)
    raise ValueError(f"unknown schedule {kind!r}; pick 'uniform' or 'shifted'")


def schedule_for(cfg, steps: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The schedule a `ModelConfig` deploys (its `steps` unless `steps` is given)."""
    return make_schedule(cfg.schedule, steps or cfg.steps, cfg.schedule_shift, device)


# ---------------------------------------------------------------------------------------------------
# Noising (training) and samplers
# ---------------------------------------------------------------------------------------------------


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with `t` of shape `[B, F]` broadcast over the trailing dims."""
    t = t.reshape(*t.shape, *([1] * (x0.ndim - t.ndim))).to(x0.dtype)
    return (1.0 - t) * x0 + t * noise


def _levels(schedule: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
    return schedule[i].to(like.dtype).expand(like.shape[:2])  # [B, F]


def sample_euler(model: Model, x: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
    """Euler steps of dx/dt = v from `x` (noise at schedule[0], usually 1) down to schedule[-1]."""
    for i in range(schedule.shape[0] - 1):
        t = _levels(schedule, i, x)
        dt = (schedule[i + 1] - schedule[i]).to(x.dtype)
        x = x + dt * model(x, t, i)
    return x


def sample_heun(model: Model, x: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
    """Heun (2nd order) steps; the last step, ending at t = 0, is a plain Euler step (as in EDM).
    Passes: 2 per step but the last, numbered in order (`2 steps - 1` in all)."""
    n = schedule.shape[0] - 1
    for i in range(n):
        t = _levels(schedule, i, x)
        dt = (schedule[i + 1] - schedule[i]).to(x.dtype)
        v = model(x, t, 2 * i)
        x_euler = x + dt * v
        if i == n - 1:
            x = x_euler
        else:
            v2 = model(x_euler, _levels(schedule, i + 1, x), 2 * i + 1)
            x = x + dt * 0.5 * (v + v2)
    return x


SAMPLERS: dict[str, Callable[[Model, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
}
