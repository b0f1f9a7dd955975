"""The streamed student's loss terms, one `Chunk` at a time: the regression weighed by depth, the frame
statistics, the hold of frames made with no key, and the DMD weight on idle rows."""

import torch
from test_self_forcing import _models

from worldsim.train.dmd import dmd_loss
from worldsim.train.streaming import Chunk


def test_regression_horizon_weighs_moving_rows_by_depth_and_idle_rows_fully():
    """exp(-d / H) per frame of a moving rollout, 1 for an idle one; H = 0 is the plain MSE."""
    B, F = 3, 4
    x0 = torch.zeros(B, F, 2, 1, 1)
    true_z = torch.ones(B, F, 2, 1, 1)  # every frame's MSE is 1
    true_z[1] = 2.0  # row 1: MSE 4
    depth, idle = torch.tensor([0, 8, 8]), torch.tensor([False, False, True])
    c = Chunk(
        x0,
        torch.zeros(B, 1, 6, dtype=torch.bool),
        torch.zeros(B, F, 6, dtype=torch.bool),
        x0,
        true_z,
        depth,
        idle,
    )
    d = torch.arange(F, dtype=torch.float32)
    want = (torch.exp(-d / 8).sum() + 4 * torch.exp(-(8 + d) / 8).sum() + 4.0) / (B * F)
    assert torch.allclose(c.regression(8.0), want)
    assert torch.allclose(c.regression(0.0), torch.tensor((4 + 16 + 4) / 12.0))
    # the rows a critic or generator split selects keep their idle flags
    assert torch.equal(c.select(torch.tensor([2, 0])).idle, torch.tensor([True, False]))


def test_frame_statistics_see_brightness_and_contrast_but_not_where_things_are():
    """`Chunk.stats`: zero for the true frames and for the same frame shifted in space (the statistics do
    not know where a wall is), the squared offset for a brighter frame, and a gradient that moves a frame's
    mean toward the true one."""
    g = torch.Generator().manual_seed(5)
    B, F, C, h, w = 2, 3, 4, 8, 8
    true_z = torch.randn(B, F, C, h, w, generator=g)
    keys = torch.zeros(B, F, 6, dtype=torch.bool)

    def chunk(x0):
        return Chunk(x0, keys[:, :1], keys, x0, true_z, torch.zeros(B, dtype=torch.long))

    assert chunk(true_z.clone()).stats().item() < 1e-10
    assert chunk(true_z.roll(3, dims=-1).flip(-2)).stats().item() < 1e-10  # moved, not changed
    assert torch.allclose(chunk(true_z + 0.5).stats(), torch.tensor(0.25))  # mean off by 0.5, std kept
    flat = chunk(true_z.mean((-2, -1), keepdim=True).expand_as(true_z).clone())
    want = true_z.std((-2, -1)).pow(2).mean()  # all the contrast lost
    assert torch.allclose(flat.stats(), want, rtol=1e-5)
    x = (true_z + 0.5).requires_grad_(True)
    chunk(x).stats().backward()
    assert bool((x.grad > 0).all())  # every element pushed down, toward the true mean
    x = flat.x0.clone().requires_grad_(True)  # a collapsed frame still gets a finite gradient
    chunk(x).stats().backward()
    assert bool(torch.isfinite(x.grad).all())


def test_hold_asks_frames_made_with_no_key_to_equal_the_frame_before():
    """`Chunk.hold`: zero when every keyless frame repeats its predecessor (the history's last frame for
    the chunk's first), blind to frames made with a key (those may move), and its gradient reaches only
    the newer frame of each pair (the one before is the target, not pulled along)."""
    g = torch.Generator().manual_seed(6)
    B, F, C, h, w = 2, 4, 3, 4, 4
    ctx = torch.randn(B, 2, C, h, w, generator=g)
    keys = torch.zeros(B, F, 6, dtype=torch.bool)
    keys[0, 2, 0] = True  # row 0 walks at frame 2: that frame may differ from frame 1
    still = ctx[:, -1:].expand(B, F, C, h, w).clone()

    def chunk(x0, k=keys):
        return Chunk(ctx, k[:, :2], k, x0, torch.zeros_like(x0), torch.zeros(B, dtype=torch.long))

    assert chunk(still.clone()).hold().item() == 0.0
    moved = still.clone()
    moved[0, 2:] += 1.0  # the walk changes the view at frame 2; frame 3 (no key) repeats it
    assert chunk(moved).hold().item() == 0.0
    assert torch.allclose(chunk(moved, torch.zeros_like(keys)).hold(), torch.tensor(1.0 / (B * F)))
    x = still.clone()
    # one keyless frame off by 2: itself and the frame after it both differ from the one before
    x[1, 1] += 2.0
    assert torch.allclose(chunk(x).hold(), torch.tensor(8.0 / (B * F)))
    x.requires_grad_(True)
    chunk(x).hold().backward()
    assert bool((x.grad[1, 1] > 0).all())  # pushed back toward frame 0
    assert bool((x.grad[1, 2] < 0).all())  # frame 2 pulled toward the (detached) frame 1
    assert float(x.grad[0].abs().sum()) == 0.0


def test_idle_dmd_weight_scales_only_the_idle_rows_dmd_gradient():
    """`--idle-dmd W`: the DMD gradient of an idle row is W times its gradient at weight 1; moving rows keep
    theirs, and W = 0 leaves idle rows no DMD gradient at all (the regression alone holds them)."""
    cfg, teacher, _ = _models(0)
    _, critic, _ = _models(1)
    C, (h, w), K = cfg.latent_channels, cfg.latent_hw, cfg.num_keys
    g = torch.Generator().manual_seed(3)
    B, Fc, F = 3, 2, 2
    ctx_z, x0 = torch.randn(B, Fc, C, h, w, generator=g), torch.randn(B, F, C, h, w, generator=g)
    ctx_keys, keys = torch.zeros(B, Fc, K, dtype=torch.bool), torch.zeros(B, F, K, dtype=torch.bool)
    chunk = Chunk(
        ctx_z, ctx_keys, keys, x0, x0, torch.zeros(B, dtype=torch.long), torch.tensor([False, True, False])
    )
    assert chunk.dmd_weight(1.0) is None  # weight 1: the plain DMD term
    t = torch.full((B, F), 0.5)

    def grad(weight):
        torch.manual_seed(7)  # the same DMD noise for every weight
        x = x0.clone().requires_grad_(True)
        loss, _ = dmd_loss(x, ctx_z, ctx_keys, keys, teacher, critic, t, row_weight=chunk.dmd_weight(weight))
        loss.backward()
        return x.grad

    g1, g0, g_half = grad(1.0), grad(0.0), grad(0.5)
    assert g1[1].abs().sum() > 0  # the teacher and the critic differ: DMD has a gradient on every row
    assert torch.equal(g0[1], torch.zeros_like(g0[1]))
    assert torch.allclose(g_half[1], 0.5 * g1[1], atol=1e-6)
    for r in (0, 2):
        assert torch.allclose(g0[r], g1[r], atol=1e-6) and torch.allclose(g_half[r], g1[r], atol=1e-6)
