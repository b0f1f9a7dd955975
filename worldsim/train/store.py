"""The latent trajectory store: long trajectories encoded once, held on the device, sampled as windows.

Rendering and encoding a fresh clip for every step cost more than the DiT's own step (base preset on the
H200: render 34 ms + encode 167 ms beside 193 ms of forward+backward+step). The store renders long
trajectories with the real game (or reads them from a dataset folder), encodes every frame once with the
frozen autoencoder and keeps the latents on the device in bf16 (the tiny preset's 16x8x8 latent is 2 KiB a
frame, the base preset's 32x8x8 4 KiB: a million frames is 2-4 GiB). Training samples windows of any length
at random offsets, so clips of several windows come free; `refresh` re-renders a fraction of the
trajectories (oldest first) every so often so the data keeps changing. Shapes: T trajectories, L frames each,
C latent channels, h x w latent grid, K keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldsim.data.dataset import Dataset
from worldsim.data.loader import GameClips, make_loader, resize_frames
from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.train import common
from worldsim.train.flow import encode_clips
from worldsim.train.options import SOURCES, STORE_DEFAULTS

log = logging.getLogger(__name__)

# frames rendered per game between two encodes: bounds the uint8 frames held at once while filling
RENDER_CHUNK = 64
# frames encoded per autoencoder call while filling (bounds the encoder's activations)
ENCODE_FRAMES = 4096


@dataclass(frozen=True)
class StoreSpec:
    """How big the store is and how it stays fresh (the `--store-*` flags)."""

    trajectories: int = 1024  # T
    length: int = 512  # L frames per trajectory
    refresh_every: int = 200  # optimizer steps between refreshes (0: never)
    refresh_fraction: float = 0.05  # of the trajectories re-rendered per refresh

    def __post_init__(self) -> None:
        if self.trajectories < 1:
            raise UserError(f"--store-trajectories must be >= 1, got {self.trajectories}")
        if self.length < 2:
            raise UserError(f"--store-length must be >= 2 frames, got {self.length}")
        if self.refresh_every < 0:
            raise UserError(f"--refresh-every must be >= 0 (0: never), got {self.refresh_every}")
        if not 0.0 <= self.refresh_fraction <= 1.0:
            raise UserError(f"--refresh-fraction must be in [0, 1], got {self.refresh_fraction}")


# A source renders `n` whole trajectories: uint8 frames [n, L, H, W, 3] and bool keys [n, L, K], produced in
# pieces (an iterator of (frames [n, l, H, W, 3], keys [n, l, K]) chunks whose lengths add up to L).
TrajectorySource = Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]


class LatentStore:
    """`T` latent trajectories of `L` frames on `device`: `z [T, L, C, h, w]` (bf16), `keys [T, L, K]`."""

    def __init__(
        self,
        ae: Autoencoder,
        source: TrajectorySource,
        spec: StoreSpec,
        *,
        num_keys: int,
        device: torch.device,
        dtype: torch.dtype = torch.bfloat16,
        seed: int = 0,
        group: int | None = None,
    ) -> None:
        self.ae, self.source, self.spec, self.device = ae, source, spec, torch.device(device)
        # trajectories rendered together: one batched game step costs about the same for 1 or 1024 games on
        # a GPU (launch-bound); on a CPU the batch is what fits the caches
        self.group = group or (1024 if self.device.type == "cuda" else 64)
        C, (h, w) = ae.cfg.latent_channels, ae.cfg.latent_hw
        T, L = spec.trajectories, spec.length
        self.z = torch.empty(T, L, C, h, w, dtype=dtype, device=self.device)
        self.keys = torch.zeros(T, L, num_keys, dtype=torch.bool, device=self.device)
        self._gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self._next = 0  # the oldest trajectory: the next one a refresh replaces
        self.rendered = 0  # trajectories rendered so far (fill and refreshes)
        self.fill()

    @property
    def frames(self) -> int:
        return self.spec.trajectories * self.spec.length

    @property
    def nbytes(self) -> int:
        return self.z.numel() * self.z.element_size() + self.keys.numel()

    def fill(self) -> None:
        """Render and encode every trajectory (the start of a run)."""
        self._render(torch.arange(self.spec.trajectories, device=self.device))
        log.info(
            "latent store: %d trajectories x %d frames (%.2f GiB on %s)",
            self.spec.trajectories,
            self.spec.length,
            self.nbytes / 2**30,
            self.device,
        )

    def refresh(self, fraction: float | None = None) -> int:
        """Re-render the oldest `fraction` of the trajectories (round robin); returns how many."""
        frac = self.spec.refresh_fraction if fraction is None else fraction
        T = self.spec.trajectories
        n = min(T, max(1, round(frac * T))) if frac > 0 else 0
        if n:
            idx = (torch.arange(n, device=self.device) + self._next) % T
            self._render(idx)
            self._next = (self._next + n) % T
        return n

    def maybe_refresh(self, step: int) -> None:
        if self.spec.refresh_every and step > 0 and step % self.spec.refresh_every == 0:
            self.refresh()

    @torch.no_grad()
    def _render(self, idx: torch.Tensor) -> None:
        L = self.spec.length
        for g in idx.split(self.group):
            t0 = 0
            for frames, keys in self.source(len(g), L):
                n = frames.shape[1]  # the chunk's frames
                if t0 + n > L or frames.shape[0] != len(g):
                    raise ValueError(f"the trajectory source gave {tuple(frames.shape)} past [{len(g)}, {L}]")
                self.z[g, t0 : t0 + n] = _encode(self.ae, frames.to(self.device)).to(self.z.dtype)
                self.keys[g, t0 : t0 + n] = keys.to(self.device, torch.bool)
                t0 += n
            if t0 != L:
                raise ValueError(f"the trajectory source gave {t0} frames, not {L}")
        self.rendered += len(idx)

    def sample(
        self, batch: int, frames: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` random windows of `frames` frames: latents fp32 `[B, F, C, h, w]`, keys `[B, F, K]`."""
        L = self.spec.length
        if not 1 <= frames <= L:
            raise UserError(
                f"clips of {frames} frames do not fit trajectories of {L}; raise --store-length to >= {frames}"
            )
        g = self._gen if generator is None else generator
        traj = torch.randint(0, self.spec.trajectories, (batch, 1), device=self.device, generator=g)
        start = torch.randint(0, L - frames + 1, (batch, 1), device=self.device, generator=g)
        t = start + torch.arange(frames, device=self.device)  # [B, F]
        return self.z[traj, t].float(), self.keys[traj, t]  # gathers: [B, F, C, h, w], [B, F, K]


def _encode(ae: Autoencoder, frames: torch.Tensor) -> torch.Tensor:
    """uint8 `[n, l, H, W, 3]` -> latents `[n, l, C, h, w]`, at most ENCODE_FRAMES frames per call."""
    n, f = frames.shape[:2]
    per = max(1, ENCODE_FRAMES // f)
    return torch.cat([encode_clips(ae, frames[i : i + per]) for i in range(0, n, per)])


# ---------------------------------------------------------------------------------------------------
# Sources: the real game, or a dataset folder
# ---------------------------------------------------------------------------------------------------


def game_source(
    *, size: int | tuple[int, int], device: torch.device, seed: int, level="default"
) -> TrajectorySource:
    """Trajectories from the real game driven by the explorer (`data.loader.GameClips`).

    Every call starts fresh games (new spawns), so a trajectory is one continuous episode of L frames,
    rendered RENDER_CHUNK frames at a time.
    """
    calls = [0]

    def render(n: int, length: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        calls[0] += 1
        chunk = min(RENDER_CHUNK, length)
        # one episode per trajectory (no respawn inside it), starting at poses uniform over the level
        clips = GameClips(batch=n, frames=chunk, size=size, device=device, seed=seed * 1_000_003 + calls[0],
                          level=level, episode_frames=-(-length // chunk) * chunk)  # fmt: skip
        for t0 in range(0, length, chunk):
            f, k = clips.next_clip()
            yield f[:, : length - t0], k[:, : length - t0]

    return render


def dataset_source(folder: str | Path, *, size: int, seed: int) -> tuple[TrajectorySource, int]:
    """Trajectories read from a dataset folder (`worldsim collect`): each recorded clip is one trajectory,
    resized to `size` when the dataset's frames differ. Returns the source and the clips' length."""
    ds = _open_dataset(folder)
    ds.preload(ds.split("train"))  # every shard decoded once, side by side, before the store fills
    rng = np.random.default_rng(seed)

    def render(n: int, length: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if length > ds.frames:
            raise UserError(
                f"--store-length {length} is longer than the dataset's clips ({ds.frames} frames in {folder}); "
                f"pass --store-length <= {ds.frames}"
            )
        train = ds.split("train")  # the held-out clips stay unseen: eval --data scores on them
        idx = rng.permutation(train)[:n] if n <= len(train) else rng.choice(train, n)
        idx = np.sort(idx)  # in file order: each shard decodes once per group even past the cache budget
        starts = rng.integers(0, ds.frames - length + 1, n)
        for t0 in range(0, length, RENDER_CHUNK):  # chunks bound the frames held and encoded at once
            m = min(RENDER_CHUNK, length - t0)
            pairs = [ds.clip(int(i), int(s0) + t0, m) for i, s0 in zip(idx, starts)]
            f = torch.from_numpy(np.stack([p[0] for p in pairs]))  # [n, m, H, W, 3]
            k = torch.from_numpy(np.stack([p[1] for p in pairs]))  # [n, m, K]
            if (ds.height, ds.width) != (size, size):
                f = resize_frames(f, size)
            yield f, k

    return render, ds.frames


def _open_dataset(folder: str | Path):
    if not Path(folder).is_dir():
        raise UserError(f"--data {folder} is not a folder; make a dataset with `worldsim collect`")
    return Dataset(folder)


# ---------------------------------------------------------------------------------------------------
# What a trainer draws from: the store, or clips rendered and encoded live
# ---------------------------------------------------------------------------------------------------


class LatentBatches:
    """Training batches of clean latents `[B, F, C, h, w]` (fp32) and keys `[B, F, K]`.

    source="store": windows sampled from a `LatentStore` (refreshed every `spec.refresh_every` steps);
    source="live": clips rendered by the game (or read from `data`) and encoded for every batch.
    """

    def __init__(
        self,
        source: str,
        *,
        ae: Autoencoder,
        batch: int,
        frames: int,
        num_keys: int,
        device: torch.device,
        seed: int,
        spec: StoreSpec | None = None,
        data: str | None = None,
        level="default",
    ) -> None:
        if source not in SOURCES:
            raise UserError(f"--source {source!r}: pick one of {', '.join(SOURCES)}")
        self.source, self.ae, self.batch, self.frames = source, ae, batch, frames
        size = ae.cfg.hw
        self.store: LatentStore | None = None
        if source == "store":
            spec = spec or StoreSpec()
            if data is not None:
                render, _ = dataset_source(data, size=size[0], seed=seed)
            else:
                render = game_source(size=size, device=device, seed=seed, level=level)
            if spec.length < frames:
                raise UserError(
                    f"--store-length {spec.length} is shorter than a training clip ({frames} frames); "
                    f"pass --store-length >= {frames}"
                )
            self.store = LatentStore(ae, render, spec, num_keys=num_keys, device=device, seed=seed)
        else:
            if data is not None:
                self._clips = make_loader(
                    data, batch=batch, frames=frames, size=size[0], device=device, seed=seed
                )
            else:
                self._clips = common.game_batches(
                    batch=batch, frames=frames, size=size, device=device, seed=seed
                )

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.store is not None:
            return self.store.sample(self.batch, self.frames)
        frames, keys = next(self._clips)
        return encode_clips(self.ae, frames), keys

    def after_step(self, step: int) -> None:
        if self.store is not None:
            self.store.maybe_refresh(step)

    def describe(self) -> dict:
        if self.store is None:
            return {"source": "live"}
        s = self.store.spec
        return {
            "source": "store",
            "trajectories": s.trajectories,
            "length": s.length,
            "refresh_every": s.refresh_every,
            "refresh_fraction": s.refresh_fraction,
            "rendered": self.store.rendered,
        }


def store_spec(args, device: torch.device, clip: int) -> StoreSpec:
    """The store the flags ask for; unset sizes take the device's defaults (a trajectory >= 2 clips), or
    with --data the dataset's clip length (each recorded clip is one trajectory)."""
    trajectories, length = STORE_DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    length = max(length, 2 * clip)
    if getattr(args, "data", None) is not None and not args.store_length:
        length = _open_dataset(args.data).frames
    return StoreSpec(
        trajectories=args.store_trajectories or trajectories,
        length=args.store_length or length,
        refresh_every=args.refresh_every,
        refresh_fraction=args.refresh_fraction,
    )
