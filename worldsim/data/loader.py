"""One loader for training: clips of (frames, keys) from the game on the fly, or from a dataset folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worldsim.data.dataset import Dataset
from worldsim.data.explorer import MIX, Explorer
from worldsim.errors import UserError

log = logging.getLogger(__name__)

EPISODE_FRAMES = 512  # the game loader re-spawns every game about this often, for varied starts


class GameClips:
    """Endless clips from a batch of GameWorlds driven by an Explorer (`MIX`), all on `device`.

    Consecutive clips of one game continue its trajectory; every `episode_frames` frames (rounded down
    to whole clips, at least one) all games respawn at poses uniform over the open cells and headings,
    and the explorer begins fresh segments. keys[:, t] is the key state that produced frames[:, t].
    After each `next_clip`: `clip_index` is its index (from 0), `respawned` says whether it began an
    episode, `episode_start` is the index of the clip that began the current one, and `poses` are the
    (pos, heading) the games respawned at, frames[:, 0] being the first step from there.
    """

    def __init__(
        self,
        *,
        batch: int,
        frames: int,
        size: int | tuple[int, int],
        device: Any,
        seed: int,
        level: Any,
        episode_frames: int = EPISODE_FRAMES,
    ):
        from worldsim.game import GameWorld

        if episode_frames < 1:
            raise UserError(f"episode_frames must be >= 1 (frames between respawns), got {episode_frames}")
        self.world = w = GameWorld(batch_size=batch, size=size, level=level, device=device)
        cfg = w.config
        self.explorer = Explorer(
            batch,
            w.num_keys,
            seed,
            w.device,
            key_names=w.key_names,
            mix=MIX,
            turn_frames=-(-cfg.heading_units // cfg.turn_units),  # ceil: a turn segment turns >= 360 degrees
        )
        self.batch, self.frames = batch, frames
        self.reset_every = max(1, episode_frames // frames)
        self._gen = torch.Generator(device=w.device)
        self._gen.manual_seed(int(seed))
        self._blocked: torch.Tensor | None = None
        self.clip_index, self.episode_start, self.respawned = -1, 0, False
        self.poses: tuple[torch.Tensor, torch.Tensor] = (w.pos.clone(), w.heading.clone())

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(self.world.key_names)

    def next_clip(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames uint8 [B, F, H, W, 3], keys bool [B, F, K]) continuing every game's trajectory."""
        w = self.world
        self.clip_index += 1
        self.respawned = self.clip_index % self.reset_every == 0
        if self.respawned:
            self.poses = w.random_poses(self.batch, self._gen)
            w.place(*self.poses)
            self.explorer.restart()
            self.episode_start, self._blocked = self.clip_index, None
        frames = torch.empty(
            self.batch, self.frames, w.height, w.width, 3, dtype=torch.uint8, device=w.device
        )
        keys = torch.empty(self.batch, self.frames, w.num_keys, dtype=torch.bool, device=w.device)
        for t in range(self.frames):
            k = self.explorer.act(self._blocked, walls=w.clearance())
            frames[:, t] = w.step(k)
            keys[:, t] = k
            self._blocked = w.blocked
        return frames, keys


def _game_loader(clips: GameClips) -> Iterator:
    while True:
        yield clips.next_clip()


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] -> [B, F, size, size, 3]: area average down, bilinear up."""
    b, f, h, w, _ = frames.shape
    x = frames.reshape(b * f, h, w, 3).permute(0, 3, 1, 2).float()  # [B*F, 3, H, W]
    mode = "area" if size <= min(h, w) else "bilinear"
    x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).reshape(b, f, size, size, 3)


def _dataset_loader(
    ds: Dataset, batch: int, frames: int, size: int | None, device: Any, seed: int, split: str = "train"
) -> Iterator:
    rng = np.random.default_rng(seed)
    device = torch.device(device)
    clips = ds.split(split)  # training reads "train": the held-out clips are for scoring only
    ds.preload(clips)
    while True:
        idx = rng.choice(clips, batch)
        starts = rng.integers(0, ds.frames - frames + 1, batch)
        pairs = [ds.clip(int(i), int(s), frames) for i, s in zip(idx, starts)]
        f = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)  # [B, F, H, W, 3]
        k = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device)  # [B, F, K]
        if size is not None and (ds.height, ds.width) != (size, size):
            f = resize_frames(f, size)
        yield f, k


def make_loader(
    source: str = "game",
    *,
    batch: int,
    frames: int,
    size: int | None = 64,
    device: Any = "cpu",
    seed: int = 0,
    level: Any = "default",
    split: str = "train",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (frames uint8 [B, F, H, W, 3], keys bool [B, F, K]) on `device`, forever.

    source="game": rendered on the fly by GameWorld + Explorer on `device` (level: "default", a Level, or
    an int procedural seed). Any other source is a dataset folder: random clips, and random windows of
    `frames` inside longer clips of its `split` ("train", or "heldout" for scoring), resized to `size` if the
    dataset's frames differ (None: as recorded). Deterministic per seed.
    """
    if batch < 1 or frames < 1:
        raise UserError(f"make_loader needs batch >= 1 and frames >= 1, got batch={batch}, frames={frames}")
    if source == "game":
        return _game_loader(
            GameClips(batch=batch, frames=frames, size=size, device=device, seed=seed, level=level)
        )
    if not Path(source).is_dir():
        raise UserError(
            f"loader source '{source}' is neither 'game' nor a dataset folder; make one with `worldsim collect`"
        )
    ds = Dataset(source)  # opened here, not in the generator, so a bad folder fails at the call
    if frames > ds.frames:
        raise UserError(
            f"frames={frames} is longer than the dataset's clips ({ds.frames} frames in {source}); pass frames <= {ds.frames}"
        )
    if size is not None and (ds.height, ds.width) != (size, size):
        log.info("dataset %s is %dx%d: resizing clips to %dx%d", source, ds.width, ds.height, size, size)
    return _dataset_loader(ds, batch, frames, size, device, seed, split)
