"""The real game: determinism, batching, keys, turning, collision, slots, sizes, sprites."""

import pytest
import torch

from worldsim.game import GameConfig, GameWorld, Level, default_level
from worldsim.world import KEY_NAMES

K = len(KEY_NAMES)


def keys_for(*names: str, batch: int = 1) -> torch.Tensor:
    k = torch.zeros(batch, K, dtype=torch.bool)
    for n in names:
        k[:, KEY_NAMES.index(n)] = True
    return k


def random_keys(steps: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, K, generator=g) < 0.35


def open_pose(world: GameWorld) -> None:
    """Stand in the middle of the garden, facing the stone crypt: open space on every side."""
    world.pos[:] = torch.tensor([12.5, 11.5])
    world.heading[:] = 54  # 270 degrees: north


def test_same_seed_and_keys_give_identical_frames():
    keys = random_keys(40, 3, seed=1)
    runs = []
    for _ in range(2):
        w = GameWorld(batch_size=3, size=32)
        frames = [w.reset([5, 6, 7])] + [w.step(k) for k in keys]
        runs.append(torch.stack(frames))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].dtype == torch.uint8 and runs[0].shape == (41, 3, 32, 32, 3)
    assert not torch.equal(runs[0][:, 0], runs[0][:, 1])  # different seeds: different games


def test_batch_equals_games_run_one_at_a_time():
    seeds, keys = [3, 11, 42, 8], random_keys(30, 4, seed=2)
    w = GameWorld(batch_size=4, size=24)
    batched = [w.reset(seeds)] + [w.step(k) for k in keys]
    for i, s in enumerate(seeds):
        one = GameWorld(batch_size=1, size=24)
        single = [one.reset([s])] + [one.step(k[i : i + 1]) for k in keys]
        for t, (b, f) in enumerate(zip(batched, single)):
            assert torch.equal(b[i], f[0]), f"game {i} differs at step {t}"


def test_every_key_changes_the_view_and_moves_the_right_way():
    w = GameWorld(size=32)
    open_pose(w)
    still = w.render()
    start_pos, start_heading = w.pos.clone(), int(w.heading)
    fwd, right = w.renderer.forward[start_heading], w.renderer.right[start_heading]
    for name in KEY_NAMES:
        open_pose(w)
        frame = w.step(keys_for(name))
        assert not torch.equal(frame, still), f"key {name} did not change the view"
        assert not bool(w.blocked[0])
        delta = w.pos[0] - start_pos[0]
        expected = {"forward": fwd, "back": -fwd, "strafe_left": -right, "strafe_right": right}
        if name in expected:
            assert torch.allclose(delta, expected[name] * w.config.move_speed, atol=1e-6), name
            assert int(w.heading) == start_heading
        else:
            assert torch.equal(w.pos, start_pos)
            turned = (int(w.heading) - start_heading) % w.config.heading_units
            assert turned == (1 if name == "turn_right" else w.config.heading_units - 1)
    # no keys: nothing moves; opposite keys cancel; diagonals move at the same speed
    open_pose(w)
    assert torch.equal(w.step(keys_for()), still)
    assert torch.equal(w.step(keys_for("forward", "back", "turn_left", "turn_right")), still)
    open_pose(w)
    w.step(keys_for("forward", "strafe_right"))
    assert abs(float((w.pos[0] - start_pos[0]).norm()) - w.config.move_speed) < 1e-6


@pytest.mark.parametrize("turn", ["turn_left", "turn_right"])
def test_full_turn_returns_to_the_identical_frame(turn):
    w = GameWorld(size=32)
    first = w.reset([4])
    frames = [w.step(keys_for(turn)) for _ in range(w.config.heading_units)]
    assert torch.equal(frames[-1], first)
    assert len({f.numpy().tobytes() for f in frames}) == len(frames)  # every heading looks different


def _inside_wall(level: Level, pos: torch.Tensor, r: float) -> torch.Tensor:
    """Does the player's square (half-size r) overlap a wall cell? pos [B, 2] -> [B] bool."""
    grid = torch.tensor(level.grid)
    hit = torch.zeros(pos.shape[0], dtype=torch.bool)
    for dx in (-r, r):
        for dy in (-r, r):
            x = (pos[:, 0] + dx).floor().long()
            y = (pos[:, 1] + dy).floor().long()
            hit |= grid[y, x] > 0
    return hit


def test_walking_into_a_wall_stops_and_sets_blocked():
    w = GameWorld(size=16)
    w.pos[:] = torch.tensor([4.5, 2.5])  # brick hall, facing the west wall (x = 0) head on
    w.heading[:] = 36  # 180 degrees: west
    positions = []
    for _ in range(60):
        w.step(keys_for("forward"))
        positions.append(float(w.pos[0, 0]))
    assert bool(w.blocked[0])
    assert positions[-1] == positions[-2]  # stopped
    assert abs(positions[-1] - (1 + w.config.radius)) < 1e-3  # touching the wall
    # slide: pushing diagonally into the wall still moves along it
    w.heading[:] = 45  # 225 degrees: north-west
    x0, y0 = w.pos[0].tolist()
    w.step(keys_for("forward"))
    assert bool(w.blocked[0]) and float(w.pos[0, 1]) < y0 and float(w.pos[0, 0]) == x0
    w.step(keys_for("back"))
    assert not bool(w.blocked[0]) and float(w.pos[0, 0]) > x0


@pytest.mark.parametrize("level", ["default", 7])
def test_random_play_never_enters_a_wall(level):
    w = GameWorld(batch_size=32, size=8, level=level)
    w.reset(list(range(32)))
    # forward-heavy random keys so that games run into walls often
    keys = random_keys(500, 32, seed=3)
    keys[:, :, KEY_NAMES.index("forward")] |= (
        torch.rand(500, 32, generator=torch.Generator().manual_seed(4)) < 0.5
    )
    blocked_seen = 0
    for k in keys:
        w.step(k)
        assert not _inside_wall(w.level, w.pos, w.config.radius - 1e-5).any()
        blocked_seen += int(w.blocked.sum())
    assert blocked_seen > 50  # the test did push into walls


def test_slots_reset_and_step_touch_only_their_games():
    w = GameWorld(batch_size=4, size=16)
    w.reset([0, 1, 2, 3])
    for k in random_keys(5, 4, seed=5):
        w.step(k)
    before = (w.pos.clone(), w.heading.clone(), w.render())
    frames = w.step(keys_for("forward", "turn_left", batch=2), slots=[2, 0])
    assert frames.shape == (2, 16, 16, 3)
    now = w.render()
    assert torch.equal(frames[0], now[2]) and torch.equal(frames[1], now[0])
    for i in (1, 3):
        assert torch.equal(w.pos[i], before[0][i]) and torch.equal(now[i], before[2][i])
    assert not torch.equal(w.pos[0], before[0][0]) and int(w.heading[2]) != int(before[1][2])
    first = w.reset([9], slots=[3])
    assert torch.equal(first[0], GameWorld(size=16).reset([9])[0])
    assert torch.equal(w.render()[1], before[2][1])
    with pytest.raises(ValueError, match="slots"):
        w.step(keys_for(batch=1), slots=[4])
    with pytest.raises(ValueError, match="slots"):
        w.reset([1, 2], slots=[1, 1])


@pytest.mark.parametrize("size", [64, 128, (48, 80)])
def test_frame_sizes(size):
    w = GameWorld(batch_size=2, size=size)
    h, wd = (size, size) if isinstance(size, int) else size
    f = w.step(keys_for("forward", batch=2))
    assert f.shape == (2, h, wd, 3) and f.dtype == torch.uint8
    # a real picture: many distinct colours, not flat or noise-saturated
    assert len(torch.unique(f[0].reshape(-1, 3), dim=0)) > 30


def test_sprites_are_drawn_and_hidden_behind_walls():
    rows = ["1111111", "1.....1", "1..1..1", "1.....1", "1111111"]
    bare = Level.from_ascii(rows[:1] + ["1>....1"] + rows[2:])
    seen = Level(grid=bare.grid, spawns=bare.spawns, sprites=[(3.5, 1.5, 0)])
    hidden = Level(grid=bare.grid, spawns=bare.spawns, sprites=[(5.5, 2.5, 0)])  # behind the pillar wall
    frames = {}
    for name, level in (("bare", bare), ("seen", seen), ("hidden", hidden)):
        w = GameWorld(size=32, level=level, config=GameConfig())
        w.pos[:] = torch.tensor([1.5, 2.5])
        w.heading[:] = 0
        frames[name] = w.render()
    assert not torch.equal(frames["bare"], frames["seen"])
    assert torch.equal(frames["bare"], frames["hidden"])


def test_default_level_is_connected_with_distinct_rooms():
    level = default_level()
    assert (level.width, level.height) == (24, 24)
    assert level.is_connected()
    assert len({c for row in level.grid for c in row if c}) >= 5  # several wall kinds
    assert len(level.sprites) >= 8 and len(level.spawns) >= 4
    # a seed picks the spawn deterministically; seeds spread over spawns and headings
    poses = {level.spawn(s, 72) for s in range(50)}
    assert level.spawn(3, 72) == level.spawn(3, 72)
    assert len({(x, y) for x, y, _ in poses}) == len(level.spawns) and len(poses) > 20


def test_bad_levels_and_configs_name_the_problem():
    with pytest.raises(ValueError, match="border"):
        Level(grid=[[1, 1, 1], [1, 0, 0], [1, 1, 1]], spawns=[(1.5, 1.5, 0)])
    with pytest.raises(ValueError, match="wall kind 9"):
        Level(grid=[[1, 1, 1], [1, 0, 9], [1, 1, 1]], spawns=[(1.5, 1.5, 0)])
    with pytest.raises(ValueError, match="no spawn"):
        Level(grid=[[1, 1, 1], [1, 0, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="unknown map character"):
        Level.from_ascii(["111", "1x1", "111"])
    with pytest.raises(ValueError, match="move_speed"):
        GameConfig(move_speed=0.9)
    with pytest.raises(ValueError, match="level must be"):
        GameWorld(level="nowhere")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_closely():
    keys = random_keys(50, 8, seed=6)
    cpu, gpu = GameWorld(batch_size=8, size=64), GameWorld(batch_size=8, size=64, device="cuda")
    cpu.reset(list(range(8)))
    gpu.reset(list(range(8)))
    for k in keys:
        a, b = cpu.step(k), gpu.step(k.cuda()).cpu()
    assert torch.allclose(cpu.pos, gpu.pos.cpu(), atol=1e-4)
    assert (a.int() - b.int()).abs().gt(8).float().mean() < 0.01  # float rounding moves a few edge pixels


def test_turning_right_pans_the_view_left():
    """Handedness: the screen's right is the player's right (a mirrored renderer fails this)."""
    w = GameWorld(size=64)
    open_pose(w)
    before = w.render()[0].float()
    after = w.step(keys_for("turn_right"))[0].float()
    s = round(64 * 5 / 66)  # one heading unit (5 degrees) of a 66-degree view, in pixels
    pan_left = (after[:, :-s] - before[:, s:]).abs().mean()
    pan_right = (after[:, s:] - before[:, :-s]).abs().mean()
    assert pan_left * 2 < pan_right
