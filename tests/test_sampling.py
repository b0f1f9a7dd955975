"""Flow-matching samplers and schedules: the convention x_t = (1-t) x0 + t noise, v = noise - x0."""

import pytest
import torch

from worldsim.sampling import (
    SAMPLERS,
    add_noise,
    make_schedule,
    shifted_schedule,
    uniform_schedule,
)


def test_schedules_run_from_noise_to_data():
    u = uniform_schedule(4)
    torch.testing.assert_close(u, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    s = shifted_schedule(4, shift=3.0)
    assert s[0] == 1 and s[-1] == 0 and bool((s[1:] < s[:-1]).all())
    assert bool((s[1:-1] > u[1:-1]).all())  # shift > 1 keeps more steps at high noise
    torch.testing.assert_close(make_schedule("shifted", 4, 1.0), u)
    with pytest.raises(ValueError, match="steps"):
        uniform_schedule(0)


def test_noise_convention():
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    t = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]])
    xt = add_noise(x0, noise, t)
    torch.testing.assert_close(xt[0, 0], x0[0, 0])
    torch.testing.assert_close(xt[0, 2], noise[0, 2])
    torch.testing.assert_close(xt[1, 1], 0.75 * x0[1, 1] + 0.25 * noise[1, 1])
    # dx_t/dt is the velocity the model is trained to predict
    eps = 1e-3
    dxdt = (add_noise(x0, noise, t + eps) - add_noise(x0, noise, t)) / eps
    torch.testing.assert_close(dxdt, noise - x0, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 3])
def test_samplers_land_on_the_data_with_the_exact_velocity(name, steps):
    # With one data point the exact velocity field is v(x_t, t) = (x_t - x0) / t: straight paths,
    # so any step count must land exactly on x0.
    x0 = torch.randn(2, 3, 4, 5)
    calls = []

    def model(x, t, n):
        assert t.shape == (2, 3) and n == len(calls)  # the pass index counts the model's calls
        calls.append(float(t[0, 0]))
        return (x - x0) / t[..., None, None]

    out = SAMPLERS[name](model, torch.randn(2, 3, 4, 5), make_schedule("shifted", steps, 2.0))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)
    assert calls[0] == 1.0 and len(calls) == (steps if name == "euler" else 2 * steps - 1)
