"""A scripted explorer for B games at once, on the device: keys that do what players do.

With `mix=MIX` (what `GameClips` trains on) each game's trajectory is a chain of segments. When one ends,
the game draws the next kind with weight share / mean length (go_return's mean is measured, since walls
cut it short), so that each kind takes its share of all frames:

| kind | share of frames | the keys |
|---|---|---|
| `sticky` | 30% | independent sticky keys, forward-biased (PRESS_PROB), each held 2-24 frames; a turn when a wall blocks |
| `idle` | 15% | no key for 16-300 frames |
| `turn` | 15% | one turn key (either) held for a full 360-degree turn in place: `turn_frames` frames |
| `go_return` | 15% | forward 16-96 frames (up to a wall), turn 180 degrees, forward back as many frames: ends where it began |
| `corridor` | 25% | forward 96-320 frames, turning away from walls as they come near (`walls`, else when blocked) |

Measured by tests/test_explorer.py on 256 games x 1024 frames of the default level (GameClips, seed 0):
sticky 30.3%, idle 14.5%, turn 14.9%, go_return 15.1%, corridor 25.3% of frames; no key pressed on 17.9%
(idle, plus sticky frames with every key up); idle stretches 16-299 frames; every turn exactly 360
degrees; every go_return ended within 0.08 cells (one move) of its start; corridor walkers moved on 93%
of their frames. A kind whose keys the world lacks (`turn` without turn_left/turn_right, `go_return`
without forward, `corridor` without forward and a turn key) gives its share to `sticky`; `go_return`
without turn keys walks back with `back`. `mix=STICKY` (the default) is the sticky keys alone: the key sequences the evaluations were measured on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from worldsim.world import KEY_NAMES

# How likely each key is to be held when its timer runs out: forward-biased so the explorer travels
# through the level instead of jittering in place. Every key has p > 0, so every key gets used; keys
# the table does not name get DEFAULT_PRESS.
PRESS_PROB = {
    "forward": 0.6,
    "back": 0.15,
    "strafe_left": 0.2,
    "strafe_right": 0.2,
    "turn_left": 0.25,
    "turn_right": 0.25,
}
DEFAULT_PRESS = 0.3
TURN_KEYS = ("turn_left", "turn_right")

KINDS = ("sticky", "idle", "turn", "go_return", "corridor")
MIX = {"sticky": 0.30, "idle": 0.15, "turn": 0.15, "go_return": 0.15, "corridor": 0.25}
STICKY = {"sticky": 1.0}
# Segment lengths in frames, (min, max) uniform; go_return's is its out leg. A turn lasts `turn_frames`.
SEGMENT_FRAMES = {"sticky": (64, 256), "idle": (16, 300), "go_return": (16, 96), "corridor": (96, 320)}
FULL_TURN_FRAMES = (
    72  # the game's default heading_units / turn_units: frames a turn key takes for 360 degrees
)
# Corridor following on `walls` (cells to the wall left-ahead, ahead, right-ahead): turn toward the open
# side once the wall ahead is nearer than AHEAD_NEAR and until it is beyond AHEAD_CLEAR; stop walking
# (turn in place) nearer than STOP; steer off a side wall nearer than SIDE_NEAR.
AHEAD_NEAR, AHEAD_CLEAR, STOP, SIDE_NEAR = 1.0, 1.5, 0.5, 0.8

_STICKY, _IDLE, _TURN, _GO_RETURN, _CORRIDOR = range(len(KINDS))
_PRIOR_SEGMENTS = 4  # the nominal mean length counts as this many segments until real ones are seen


class Explorer:
    """Choose `[B, K]` multi-hot keys for B games, all on `device`, with no host syncs.

    Sticky keys: each key is an independent switch; when its timer runs out it is pressed with its
    probability and held (or released) for a random `hold` frames. A game whose last move hit a wall
    (`blocked`) drops every key and holds one turn key for a random `turn_hold` frames. `mix` chains
    these with the other segment kinds of the module table. `kind` [B] (index into KINDS) and `segment`
    [B] (segments begun) say what each game is doing. Deterministic for a seed on a device.
    """

    def __init__(
        self,
        batch: int,
        num_keys: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        *,
        key_names: Sequence[str] | None = None,
        hold: tuple[int, int] = (2, 24),
        turn_hold: tuple[int, int] = (4, 16),
        mix: Mapping[str, float] = STICKY,
        turn_frames: int = FULL_TURN_FRAMES,
    ) -> None:
        if batch < 1 or num_keys < 1:
            raise ValueError(
                f"Explorer needs batch >= 1 and num_keys >= 1, got batch={batch}, num_keys={num_keys}"
            )
        if key_names is None and num_keys == len(KEY_NAMES):
            key_names = KEY_NAMES
        if key_names is not None and len(key_names) != num_keys:
            raise ValueError(
                f"key_names has {len(key_names)} names for num_keys={num_keys}; pass one per key"
            )
        for name, (lo, hi) in (("hold", hold), ("turn_hold", turn_hold)):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) frames with 1 <= min <= max, got {(lo, hi)}")
        unknown = set(mix) - set(KINDS)
        if unknown or any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6:
            raise ValueError(f"mix must give shares >= 0 summing to 1 over kinds {KINDS}, got {dict(mix)}")
        if turn_frames < 2:
            raise ValueError(f"turn_frames must be >= 2 (frames for a 360-degree turn), got {turn_frames}")
        self.batch, self.num_keys, self.hold, self.turn_hold = batch, num_keys, hold, turn_hold
        self.device = dev = torch.device(device)
        self.key_names = (
            tuple(key_names) if key_names is not None else tuple(f"key_{i}" for i in range(num_keys))
        )
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(int(seed))
        self._p = torch.tensor([PRESS_PROB.get(n, DEFAULT_PRESS) for n in self.key_names], device=dev)
        turns = [i for i, n in enumerate(self.key_names) if n in TURN_KEYS]
        # [T, K] one row per turn key: the key state held while turning away from a wall.
        self._turn_rows = torch.zeros(max(len(turns), 1), num_keys, dtype=torch.bool, device=dev)
        for row, i in enumerate(turns):
            self._turn_rows[row, i] = True
        self._has_turns = bool(turns)
        self._held = torch.zeros(batch, num_keys, dtype=torch.bool, device=dev)
        self._timer = torch.zeros(batch, num_keys, dtype=torch.long, device=dev)
        self._mixed = dict(mix) != STICKY
        if self._mixed:
            self._init_mix(mix, turn_frames)
        self.kind = torch.zeros(batch, dtype=torch.long, device=dev)
        self.segment = torch.zeros(batch, dtype=torch.long, device=dev)

    def _init_mix(self, mix: Mapping[str, float], turn_frames: int) -> None:
        b, dev = self.batch, self.device
        names = self.key_names

        def key(name: str) -> torch.Tensor:  # [K] bool: the one-hot of a key, all False if the world lacks it
            return torch.tensor([n == name for n in names], dtype=torch.bool, device=dev)

        self._fwd, self._back, self._left_key, self._right_key = (
            key(n) for n in ("forward", "back", *TURN_KEYS)
        )
        has = set(names)
        dirs = [d for d, n in ((-1, TURN_KEYS[0]), (1, TURN_KEYS[1])) if n in has]
        self._dirs = torch.tensor(dirs or [0], device=dev)
        # go_return walks back with `back` where it cannot turn round
        self._walk_back = not dirs and "back" in has
        usable = {
            "turn": bool(dirs),
            "go_return": "forward" in has and (bool(dirs) or self._walk_back),
            "corridor": "forward" in has and bool(dirs),
        }
        share = [mix.get(k, 0.0) if usable.get(k, True) else 0.0 for k in KINDS]
        share[_STICKY] += 1 - sum(share)  # what the world cannot do is sticky keys instead
        self._share = torch.tensor(share, device=dev)
        self._half = 0 if self._walk_back else round(turn_frames / 2)
        spans = {**SEGMENT_FRAMES, "turn": (turn_frames, turn_frames)}
        self._lo = torch.tensor([spans[k][0] for k in KINDS], device=dev)
        self._span = torch.tensor([spans[k][1] - spans[k][0] + 1 for k in KINDS], device=dev)
        nominal = [sum(spans[k]) / 2 for k in KINDS]
        nominal[_GO_RETURN] = 2 * nominal[_GO_RETURN] + self._half
        self._mean = torch.tensor(nominal, device=dev)  # [kinds] mean segment length in frames
        # Walls cut go_return short, so its mean is measured (integer counts: exact in any summation
        # order, so the draws stay deterministic); the nominal mean counts as a few segments at first.
        self._gr_frames = torch.tensor(round(nominal[_GO_RETURN] * _PRIOR_SEGMENTS), device=dev)
        self._gr_count = torch.tensor(_PRIOR_SEGMENTS, device=dev)
        z = torch.zeros(b, dtype=torch.long, device=dev)
        # per game: frames left in the phase, frames since the segment began, go_return's phase (0 out,
        # 1 turning round, 2 back) and frames walked out, the turn direction (-1 left, +1 right), and
        # corridor's steering (committed turn: a flag with `walls`, frames left without)
        self._left, self._age, self._phase, self._out, self._dir, self._steer = (z.clone() for _ in range(6))
        self._restart = False

    def _randint(self, lo: int, hi: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(lo, hi + 1, shape, generator=self._gen, device=self.device)

    def _rand_dir(self) -> torch.Tensor:
        return self._dirs[
            torch.randint(0, len(self._dirs), (self.batch,), generator=self._gen, device=self.device)
        ]

    def restart(self) -> None:
        """End every game's segment: the next `act` begins fresh ones (call it when the games respawn)."""
        if self._mixed:
            self._restart = True

    def act(self, blocked: torch.Tensor | None = None, *, walls: torch.Tensor | None = None) -> torch.Tensor:
        """The keys for the next step. `blocked` [B] bool: which games' last move hit a wall; `walls` [B, 3]:
        cells to the wall left-ahead, ahead and right-ahead (`GameWorld.clearance`), for corridor following."""
        if not self._mixed:
            return self._sticky(blocked)
        b = self.batch
        hit = torch.zeros(b, dtype=torch.bool, device=self.device)
        if blocked is not None:
            hit = blocked.to(device=self.device, dtype=torch.bool).reshape(b)
        sticky = self._sticky(hit & (self.kind == _STICKY))
        self._advance(hit)
        return torch.where((self.kind == _STICKY)[:, None], sticky, self._scripted(hit, walls))

    def _sticky(self, blocked: torch.Tensor | None) -> torch.Tensor:
        b, k = self.batch, self.num_keys
        self._timer -= 1
        expired = self._timer <= 0
        pressed = torch.rand(b, k, generator=self._gen, device=self.device) < self._p
        self._held = torch.where(expired, pressed, self._held)
        self._timer = torch.where(expired, self._randint(*self.hold, (b, k)), self._timer)
        if blocked is not None:
            hit = blocked.to(device=self.device, dtype=torch.bool).reshape(b, 1)
            if self._has_turns:
                which = self._randint(0, self._turn_rows.shape[0] - 1, (b,))
                turn = self._turn_rows[which]  # [B, K]
            else:  # no turn key to escape with: a fresh random key state instead
                turn = torch.rand(b, k, generator=self._gen, device=self.device) < self._p
            self._held = torch.where(hit, turn, self._held)
            self._timer = torch.where(hit, self._randint(*self.turn_hold, (b, 1)).expand(b, k), self._timer)
        return self._held.clone()

    def _advance(self, hit: torch.Tensor) -> None:
        """Count the frame; move go_return through its phases; begin new segments where one ended."""
        self._left -= 1
        self._age += 1
        gr = self.kind == _GO_RETURN
        # The out leg ends at a wall too: the blocked frame moved only part way, so walk back one fewer.
        out_done = gr & (self._phase == 0) & ((self._left <= 0) | hit)
        self._out -= (out_done & hit).long()
        self._phase = torch.where(out_done, 1, self._phase)
        self._left = torch.where(out_done, self._half, self._left)
        turned = gr & (self._phase == 1) & (self._left <= 0)
        self._phase = torch.where(turned, 2, self._phase)
        self._left = torch.where(turned, self._out, self._left)
        done = self._left <= 0
        ended = done & gr & (self.segment > 0)  # a go_return that ended by itself (not cut by a respawn)
        self._gr_frames += (ended * self._age).sum()
        self._gr_count += ended.sum()
        first = self.segment == 0
        if self._restart:
            done = first = torch.ones_like(done)
            self._restart = False
        self._begin(done, first)

    def _begin(self, done: torch.Tensor, first: torch.Tensor) -> None:
        """Draw a new segment for every game where `done`: its kind, length and turn direction.

        Kinds are drawn with weight share / mean length, so each takes its share of the frames once the
        chain has run a while. The first segment of a trajectory (`first`) is drawn with share /
        sqrt(mean length) instead: at share / mean the short kinds would crowd every trajectory's start
        (a renewal chain's transient); this midway weight holds the shares within ~0.005 over 512 frames.
        """
        b, dev = self.batch, self.device
        self._mean[_GO_RETURN] = self._gr_frames / self._gr_count
        cdfs = [(w / w.sum()).cumsum(0) for w in (self._share / self._mean, self._share / self._mean.sqrt())]
        cdf = torch.where(first[:, None], cdfs[1], cdfs[0])  # [B, kinds]
        u = torch.rand(b, generator=self._gen, device=dev)
        kind = (u[:, None] >= cdf[:, :-1]).sum(1)  # [B]: kind k where cdf[k-1] <= u < cdf[k]
        frames = self._lo[kind] + (torch.rand(b, generator=self._gen, device=dev) * self._span[kind]).long()
        zero = torch.zeros_like(kind)
        self.kind = torch.where(done, kind, self.kind)
        self._left = torch.where(done, frames, self._left)
        self._dir = torch.where(done, self._rand_dir(), self._dir)
        for state in ("_age", "_phase", "_out", "_steer"):
            setattr(self, state, torch.where(done, zero, getattr(self, state)))
        self.segment = self.segment + done.long()

    def _scripted(self, hit: torch.Tensor, walls: torch.Tensor | None) -> torch.Tensor:
        """[B, K] keys of the non-sticky kinds (rows of sticky games are ignored)."""
        kind, phase = self.kind, self._phase
        gr = kind == _GO_RETURN
        corridor = kind == _CORRIDOR
        c_fwd, c_turn = self._corridor(corridor, hit, walls)
        walk_out, walk_back = gr & (phase == 0), gr & (phase == 2)
        forward = walk_out | (walk_back & (not self._walk_back)) | (corridor & c_fwd)
        back = walk_back & self._walk_back
        turn = torch.where((kind == _TURN) | (gr & (phase == 1)), self._dir, torch.where(corridor, c_turn, 0))
        self._out += walk_out.long()
        return (
            (forward[:, None] & self._fwd)
            | (back[:, None] & self._back)
            | ((turn < 0)[:, None] & self._left_key)
            | ((turn > 0)[:, None] & self._right_key)
        )

    def _corridor(
        self, active: torch.Tensor, hit: torch.Tensor, walls: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corridor following: (walk forward [B] bool, turn [B] in -1/0/+1)."""
        if (
            walls is None
        ):  # blind: walk on; at a wall commit to a 45-135 degree turn either way, still walking
            start = active & hit & (self._steer <= 1)  # not turning after this frame
            quarter = max(2, self._half // 2)  # frames of a 90-degree turn
            n = self._randint(quarter // 2, quarter * 3 // 2, (self.batch,))
            self._steer = torch.where(start, n, self._steer - 1)
            self._dir = torch.where(start, self._rand_dir(), self._dir)
            return torch.ones_like(active), torch.where(self._steer > 0, self._dir, 0)
        left, ahead, right = walls.to(self.device).float().unbind(1)
        # toward the more open side; a coin where both look alike
        side = torch.where((right - left).abs() > 0.25, torch.where(right > left, 1, -1), self._rand_dir())
        start = active & (self._steer == 0) & ((ahead < AHEAD_NEAR) | hit)
        self._dir = torch.where(start, side, self._dir)
        self._steer = ((self._steer > 0) | start).long() * (ahead < AHEAD_CLEAR).long()
        nudge = torch.where(
            (left < SIDE_NEAR) & (right > left), 1, torch.where((right < SIDE_NEAR) & (left > right), -1, 0)
        )
        return ahead >= STOP, torch.where(self._steer > 0, self._dir, nudge)
