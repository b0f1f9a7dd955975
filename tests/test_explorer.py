"""The explorer's mix measured on a batch of real games: shares, idle stretches, full turns, go-and-return,
corridors, spawns anywhere, fallbacks for other key sets, determinism."""

import pytest
import torch

game = pytest.importorskip("worldsim.game")

from worldsim.data import Explorer, GameClips  # noqa: E402
from worldsim.data.explorer import KINDS, MIX, TURN_KEYS  # noqa: E402

B, T = 256, 1024  # games x frames of the measured batch: ~1,800 whole segments
SHARE_TOL = 0.04  # ~4 standard deviations of a kind's share over such a batch (0.005-0.01 across seeds)


@pytest.fixture(scope="module")
def batch():
    """Per frame t: keys [T, B, K], kind and segment [T, B] of the explorer, and the game's pose after
    each frame, pos [T + 1, B, 2] and heading [T + 1, B] (index 0: the spawn)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture
    clips = GameClips(batch=B, frames=1, size=8, device="cpu", seed=0, level="default", episode_frames=T)
    keys, kind, segment, pos, heading = [], [], [], [], []
    for t in range(T):
        k = clips.next_clip()[1][:, 0]
        if t == 0:
            pos.append(clips.poses[0])
            heading.append(clips.poses[1])
        keys.append(k)
        kind.append(clips.explorer.kind.clone())
        segment.append(clips.explorer.segment.clone())
        pos.append(clips.world.pos.clone())
        heading.append(clips.world.heading.clone())
    torch.set_num_threads(threads)
    stack = torch.stack
    return dict(
        keys=stack(keys), kind=stack(kind), segment=stack(segment), pos=stack(pos), heading=stack(heading),
        config=clips.world.config, level=clips.world.level,
    )  # fmt: skip


def segments(run: dict, name: str) -> list[tuple[int, int, int]]:
    """(game, first frame, end frame exclusive) of every whole segment of kind `name` (the segment still
    running at the end of the batch is left out)."""
    out = []
    seg, kind = run["segment"], run["kind"]
    for b in range(seg.shape[1]):
        starts = [0, *((seg[1:, b] != seg[:-1, b]).nonzero().flatten() + 1).tolist()]
        for t0, t1 in zip(starts, starts[1:]):
            if KINDS[int(kind[t0, b])] == name:
                out.append((b, t0, t1))
    return out


def test_mix_shares_match_the_documented_table(batch):
    kind = batch["kind"]
    shares = {name: (kind == i).float().mean().item() for i, name in enumerate(KINDS)}
    for name, share in shares.items():
        assert abs(share - MIX[name]) < SHARE_TOL, f"{name}: {share:.3f} of frames, documented {MIX[name]}"
    no_key = (~batch["keys"].any(-1)).float().mean().item()
    assert no_key >= 0.10, f"only {no_key:.3f} of frames have no key pressed"


def test_idle_stretches_are_16_to_300_frames_of_no_key(batch):
    idle = segments(batch, "idle")
    assert len(idle) >= 100
    lengths = [t1 - t0 for _, t0, t1 in idle]
    assert min(lengths) >= 16 and max(lengths) <= 300
    assert min(lengths) < 60 and max(lengths) > 240, "the lengths spread over the range"
    for b, t0, t1 in idle:
        assert not batch["keys"][t0:t1, b].any()
        assert torch.equal(batch["pos"][t1, b], batch["pos"][t0, b]), "the player stands still"


def test_full_turns_turn_360_degrees_either_way(batch):
    cfg = batch["config"]
    turns = segments(batch, "turn")
    assert len(turns) >= 100
    directions = set()
    for b, t0, t1 in turns:
        h = batch["heading"][t0 : t1 + 1, b]
        steps = (h[1:] - h[:-1] + cfg.heading_units // 2) % cfg.heading_units - cfg.heading_units // 2
        assert (steps == steps[0]).all() and steps[0].abs() == cfg.turn_units, "one way, every frame"
        assert steps.sum().abs() == cfg.heading_units and h[-1] == h[0], "a full 360-degree turn"
        assert torch.equal(batch["pos"][t1, b], batch["pos"][t0, b]), "in place"
        directions.add(int(steps[0]))
    assert directions == {-cfg.turn_units, cfg.turn_units}


def test_go_and_return_ends_where_it_began(batch):
    cfg = batch["config"]
    trips = segments(batch, "go_return")
    assert len(trips) >= 100
    away = []
    for b, t0, t1 in trips:
        path = batch["pos"][t0 : t1 + 1, b]
        back = (path[-1] - path[0]).norm().item()
        # within one move: the frame a wall stopped the out leg went only part way
        assert back <= cfg.move_speed + 1e-3, (
            f"game {b} frames {t0}-{t1} ended {back:.3f} cells from its start"
        )
        turned = (batch["heading"][t1, b] - batch["heading"][t0, b]) % cfg.heading_units
        assert turned == cfg.heading_units // 2, "it came back facing the other way"
        away.append((path - path[0]).norm(dim=-1).max().item())
    assert sorted(away)[len(away) // 2] >= 1.0, "the median trip goes at least a cell away"


def test_corridor_following_keeps_walking(batch):
    corridor = batch["kind"] == KINDS.index("corridor")
    moved = (batch["pos"][1:] - batch["pos"][:-1]).norm(dim=-1) > 0
    assert moved[corridor].float().mean() >= 0.85, "turns away from walls instead of pushing into them"
    assert batch["keys"][:, :, 0][corridor].float().mean() >= 0.85, "forward held"


def test_corridor_without_walls_turns_when_blocked():
    world = game.GameWorld(batch_size=64, size=8)
    world.place(*world.random_poses(64, torch.Generator().manual_seed(0)))
    e = Explorer(64, world.num_keys, seed=0, mix=MIX)
    corridor, turn_keys = KINDS.index("corridor"), [world.key_names.index(n) for n in TURN_KEYS]
    hits = turned = 0
    for _ in range(400):
        was = (e.kind == corridor) & world.blocked  # a corridor walker whose last move hit a wall
        k = e.act(world.blocked)
        hit = was & (e.kind == corridor)
        hits += int(hit.sum())
        turned += int((hit & k[:, turn_keys].any(1) & k[:, 0]).sum())
        world.step(k)
    assert hits >= 20 and turned == hits, "walks on, turning"


def test_spawns_cover_the_free_cells_and_all_headings():
    world = game.GameWorld(batch_size=1, size=8)
    cfg, level = world.config, world.level
    pos, heading = world.random_poses(1000, torch.Generator().manual_seed(0))
    r = cfg.radius
    for x, y in pos.tolist():  # the player's square clear of walls, checked on the level itself
        assert all(level.is_open(x + dx, y + dy) for dx in (-r, r) for dy in (-r, r)), (x, y)
    cells = set(map(tuple, pos.long().tolist()))
    assert len(cells) >= 0.9 * len(level.open_cells())  # 1000 draws over 311 cells: ~96% expected
    assert set(heading.tolist()) == set(range(cfg.heading_units)), "every heading, so every quadrant"
    frac = pos - pos.floor()
    assert ((frac < 0.1) | (frac > 0.9)).any(), "points near cell borders too, not only cell centres"
    again = world.random_poses(1000, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], pos) and torch.equal(again[1], heading)
    other = game.GameWorld(batch_size=1, size=8, level=3)  # a procedural level
    p, _ = other.random_poses(200, torch.Generator().manual_seed(1))
    assert all(other.level.is_open(x + dx, y + dy) for x, y in p.tolist() for dx in (-r, r) for dy in (-r, r))


def test_place_puts_games_at_poses():
    world = game.GameWorld(batch_size=3, size=8)
    pos, heading = torch.tensor([[1.5, 3.5], [5.5, 3.5]]), torch.tensor([36, 0])
    frames = world.place(pos, heading, slots=[2, 0])
    assert frames.shape == (2, 8, 8, 3)
    assert torch.equal(world.pos[[2, 0]], pos) and torch.equal(world.heading[[2, 0]], heading)
    assert torch.equal(frames, world.render(slots=[2, 0]))
    # facing west one half cell from the border wall; facing east down an open row (capped at the reach)
    assert world.clearance()[2, 1].item() == 0.5 and world.clearance()[0, 1].item() == 2.0
    with pytest.raises(ValueError, match="place needs pos"):
        world.place(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer heading"):
        world.place(torch.zeros(3, 2), torch.zeros(3))


def test_mix_is_deterministic_per_seed():
    def run(seed):
        clips = GameClips(
            batch=8, frames=32, size=8, device="cpu", seed=seed, level="default", episode_frames=64
        )
        return [clips.next_clip() for _ in range(4)]

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))


def test_mix_falls_back_for_key_sets_without_its_keys():
    # No turn keys: no turns or corridors; go_return walks out with forward and back with back.
    world = game.GameWorld(batch_size=64, size=8, key_names=("forward", "back"))
    world.place(*world.random_poses(64, torch.Generator().manual_seed(0)))
    e = Explorer(64, 2, seed=0, key_names=world.key_names, mix=MIX)
    go_return = KINDS.index("go_return")
    kinds, start, errors = set(), world.pos.clone(), []
    for _ in range(600):
        kind, seg = e.kind.clone(), e.segment.clone()
        k = e.act(world.blocked)
        began = e.segment != seg  # world.pos: where the last segment ended and the new one begins
        errors.append((world.pos - start).norm(dim=1)[began & (seg > 0) & (kind == go_return)])
        start = torch.where(began[:, None], world.pos, start)
        kinds |= set(e.kind.tolist())
        assert not (k.all(1) & (e.kind == go_return)).any(), "never forward and back at once"
        world.step(k)
    assert kinds == {KINDS.index(n) for n in ("sticky", "idle", "go_return")}
    errors = torch.cat(errors)
    assert len(errors) >= 20 and errors.max() <= world.config.move_speed + 1e-3
    # Keys the game does not name: sticky keys and idle stretches only, still [B, K].
    e = Explorer(16, 3, seed=0, key_names=("a", "b", "c"), mix=MIX)
    kinds = set()
    for _ in range(400):
        assert e.act(torch.rand(16) < 0.1).shape == (16, 3)
        kinds |= set(e.kind.tolist())
    assert kinds == {KINDS.index("sticky"), KINDS.index("idle")}
    with pytest.raises(ValueError, match="mix must give shares"):
        Explorer(4, 3, mix={"idle": 0.5, "dance": 0.5})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mix_steps_without_host_syncs_on_cuda():
    world = game.GameWorld(batch_size=1024, size=8, device="cuda")
    e = Explorer(1024, world.num_keys, 0, "cuda", key_names=world.key_names, mix=MIX)
    gen = torch.Generator(device="cuda").manual_seed(0)
    world.place(*world.random_poses(1024, gen))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(64):
            keys = e.act(world.blocked, walls=world.clearance())
            world.random_poses(1024, gen)
        e.restart()
        e.act(world.blocked, walls=world.clearance())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert keys.device.type == "cuda" and keys.shape == (1024, world.num_keys)
