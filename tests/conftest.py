import os

# Real pygame without a display, and no GPU assumptions, in every test.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a small CPU: a second intra-op thread only adds contention (10x slower when busy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ae_path(tmp_path_factory):
    """A test-preset autoencoder.pt (8 steps): the frozen autoencoder of the teacher tests."""
    from models import train_args

    from worldsim.train import autoencoder as ae_train

    out = tmp_path_factory.mktemp("ae")
    ae_train.train(train_args(ae_train, out, steps=8, batch=4, lr=3e-3, heldout=16))
    return out / "autoencoder.pt"
