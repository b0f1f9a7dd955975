"""Re-run the real game (or the recorded Gymnasium env) from a recording's seed and keys and compare every
frame (`worldsim verify`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.gym_env import GYM_PREFIX
from worldsim.record.reader import RecordingReader

log = logging.getLogger(__name__)

# Header `world` values that name the real game (GameWorld.name, or the CLI's --world spelling).
GAME_WORLD_NAMES = frozenset({"gameworld", "game"})


@dataclass(frozen=True)
class VerifyResult:
    frames_checked: int
    truncated: bool
    # frames after skipped damaged records, up to the next reset: the game state there is unknown
    frames_unchecked: int = 0
    records_skipped: int = 0
    mismatch_index: int | None = None  # record index of the first differing frame
    mismatch_frame_number: int | None = None
    differing_pixels: int = 0
    max_abs_diff: int = 0

    @property
    def identical(self) -> bool:
        return self.mismatch_index is None


def _game_level(header: dict, path: Path) -> str | int:
    level = header["extra"].get("level", "default")
    if isinstance(level, str | int) and not isinstance(level, bool):
        return level
    raise UserError(
        f"{path}: header extra.level is {type(level).__name__}; verify can rebuild only the named level "
        "'default' or a procedural level seed (int)"
    )


def _pick_device(requested: str | None, header: dict) -> str:
    """--device, else the recording's `extra.device` when this machine has it, else cpu."""
    import torch

    if requested is not None:
        return requested
    recorded = header["extra"].get("device")
    if isinstance(recorded, str) and recorded.startswith("cuda"):
        if torch.cuda.is_available():
            return recorded
        log.warning("recorded on %s, verifying on cpu: frames may differ across devices", recorded)
    return "cpu"


def verify_recording(path: str | Path, *, device: str | None = None) -> VerifyResult:
    """Step a fresh GameWorld (or GymWorld, for a `gym:ID` recording) under the recorded keys; stop at
    the first frame that differs.

    `device` defaults to the recording's `extra.device` when available here (the game is bit-exact
    per device, not across devices), else cpu. A gym world is rebuilt with the env's defaults (frame skip,
    no sticky actions: what play and serve record with); it is exact where the env is deterministic per
    seed, as CartPole and ale-py's Atari games are.
    """
    path = Path(path)
    reader = RecordingReader(path)
    header = reader.header
    gym = header["world"].startswith(GYM_PREFIX)
    if not gym and header["world"].lower() not in GAME_WORLD_NAMES:
        reader.close()
        raise UserError(
            f"{path}: recorded world is '{header['world']}', and verify re-runs only the real game "
            "(GameWorld) and Gymnasium envs (gym:ID); verifying a neural world would need its checkpoint"
            + (f" (hash {header['checkpoint_hash']})" if header["checkpoint_hash"] else "")
            + " and a bit-exact deterministic sampler on the recording's device; compare it against the "
            "game with `worldsim eval` instead"
        )
    if header["seed"] is None:
        reader.close()
        raise UserError(f"{path}: header seed is nil; verify needs the seed the game was reset with")
    import torch

    device = _pick_device(device, header)

    try:
        world = _rebuild(header, path, device)
    except BaseException:
        reader.close()
        raise
    if list(world.key_names) != list(header["key_names"]):
        reader.close()
        raise UserError(
            f"{path}: recorded key_names {header['key_names']} differ from this game's {list(world.key_names)}"
        )
    checked = unchecked = 0
    lost = False  # past a damaged span and no reset since: nothing to compare against
    try:
        for i, rec in enumerate(reader):
            lost = (lost or rec.after_gap) and rec.reset_seed is None
            if lost:
                unchecked += 1
                continue
            if rec.reset_seed is not None:
                frame = world.reset([rec.reset_seed])
            elif i == 0:  # the first record is the frame reset(seed) returned
                frame = world.reset([header["seed"]])
            else:
                frame = world.step(torch.from_numpy(rec.keys[None].copy()).to(device))
            got = frame[0].cpu().numpy()  # host sync: verify compares on the CPU
            if not np.array_equal(got, rec.frame):
                diff = np.abs(got.astype(np.int16) - rec.frame.astype(np.int16))
                return VerifyResult(
                    frames_checked=checked,
                    truncated=False,
                    mismatch_index=i,
                    mismatch_frame_number=rec.frame_number,
                    differing_pixels=int((diff.max(axis=-1) > 0).sum()),
                    max_abs_diff=int(diff.max()),
                )
            checked += 1
    finally:
        reader.close()
        world.close()
    return VerifyResult(
        frames_checked=checked,
        truncated=reader.truncated,
        frames_unchecked=unchecked,
        records_skipped=reader.records_skipped,
    )


def _rebuild(header: dict, path: Path, device: str):
    """The recorded world, fresh: the real game at its level, or the recorded Gymnasium env."""
    if header["world"].startswith(GYM_PREFIX):
        from worldsim.gym_world import GymWorld  # gymnasium (heavy, optional): only for a gym recording

        if header["height"] != header["width"]:
            raise UserError(
                f"{path}: a gym world's frames are square, the header says {header['height']}x{header['width']}"
            )
        return GymWorld(header["world"][len(GYM_PREFIX) :], size=header["height"], device=device)
    level = _game_level(header, path)
    try:
        return GameWorld(batch_size=1, size=(header["height"], header["width"]), level=level, device=device)
    except ValueError as e:
        raise UserError(f"{path}: cannot rebuild the recorded game (extra.level {level!r}): {e}") from None
