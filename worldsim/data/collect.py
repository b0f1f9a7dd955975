"""Build datasets: from the game (batched, explorer-driven) or from `.wsrec` recordings of the game."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldsim.data.dataset import DatasetWriter
from worldsim.data.loader import GameClips
from worldsim.errors import UserError
from worldsim.record import RecordingReader

log = logging.getLogger(__name__)

GAME_WORLD_NAMES = frozenset({"gameworld", "game"})


def collect_game(
    out: str | Path,
    *,
    clips: int,
    frames: int,
    size: int,
    seed: int = 0,
    device: Any = "cpu",
    level: Any = "default",
    batch: int = 64,
    progress: bool = True,
) -> Path:
    """Render `clips` clips of `frames` frames at size x size with GameWorld + Explorer, `batch` games at once."""

    _check_counts(clips=clips, frames=frames, size=size, batch=batch)
    batch = min(batch, clips)
    source = GameClips(batch=batch, frames=frames, size=size, device=device, seed=seed, level=level)
    level_name = level if isinstance(level, str | int) else type(level).__name__
    writer = DatasetWriter(
        out,
        key_names=source.key_names,
        height=source.world.height,
        width=source.world.width,
        frames=frames,
        source=f"game level={level_name} seed={seed} explorer",
    )
    with tqdm(total=clips, unit="clip", desc="collect game", disable=not progress) as bar:
        done, first_id = 0, -batch
        while done < clips:
            f, k = source.next_clip()
            n = min(batch, clips - done)
            if source.respawned:  # every game begins an episode: ids first_id .. first_id + batch - 1
                first_id += batch
            episode = np.repeat(np.arange(first_id, first_id + n)[:, None], frames, 1)
            reset = np.zeros((n, frames), bool)
            reset[:, 0] = source.respawned
            writer.add(f[:n], k[:n], episode, reset)  # host copy: the dataset lives on disk
            done += n
            bar.update(n)
    return writer.close()


def collect_recordings(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    frames: int,
    any_world: bool = False,
    progress: bool = True,
) -> Path:
    """Cut each recording into consecutive clips of `frames` frames (the remainder is dropped).

    A clip never spans a mid-session reset: the frames before a reset that do not fill a clip are
    dropped too. All recordings must share size and key names.
    """

    _check_counts(frames=frames)
    if not paths:
        raise UserError("--from-recording needs at least one .wsrec file")
    writer: DatasetWriter | None = None
    first: dict | None = None
    episode = 0  # the id of the episode being read
    for path in tqdm(paths, unit="file", desc="collect recordings", disable=not progress):
        reader = RecordingReader(path)
        h = reader.header
        if h["world"].lower() not in GAME_WORLD_NAMES and not any_world:
            reader.close()
            raise UserError(
                f"{path}: recorded world is '{h['world']}', not the real game; training on a model's own "
                "frames teaches it its mistakes. Pass --any-world to convert it anyway"
            )
        if first is None:
            first = h
            writer = DatasetWriter(
                out,
                key_names=h["key_names"],
                height=h["height"],
                width=h["width"],
                frames=frames,
                source="recordings: " + ", ".join(Path(p).name for p in paths),
                fps=h["fps"],
            )
        elif (h["height"], h["width"], h["key_names"]) != (
            first["height"],
            first["width"],
            first["key_names"],
        ):
            reader.close()
            raise UserError(
                f"{path}: {h['width']}x{h['height']} with keys {h['key_names']} does not match the first "
                f"recording's {first['width']}x{first['height']} with keys {first['key_names']}; "
                "convert recordings of one size and key set together"
            )
        clip_f: list[np.ndarray] = []
        clip_k: list[np.ndarray] = []
        clip_r: list[bool] = []
        made, start = 0, True
        for rec in reader:
            if rec.reset_seed is not None or rec.after_gap:  # a new episode or a damaged span: never stitch
                clip_f, clip_k, clip_r = [], [], []
                episode += 1
            clip_f.append(rec.frame)
            clip_k.append(rec.keys)
            clip_r.append(start or rec.reset_seed is not None)  # the first frame of a recording began one
            start = False
            if len(clip_f) == frames:
                ids = np.full((1, frames), episode)
                writer.add(np.stack(clip_f)[None], np.stack(clip_k)[None], ids, np.array(clip_r)[None])
                clip_f, clip_k, clip_r = [], [], []
                made += 1
        episode += 1  # the next recording is another episode
        if made == 0:
            log.warning("%s: %d frames give no full clip of %d frames", path, reader.records_read, frames)
    return writer.close()


def _check_counts(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} must be an int >= 1, got {value!r}")
