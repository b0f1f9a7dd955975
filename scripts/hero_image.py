"""The README's hero image: the real game and the neural world side by side on the same keys.

    python3 scripts/hero_image.py [--checkpoint tiny-student] [--frames 90] [--out docs/hero.gif]

Both start from the same real frames (the game's spawn plus a few real steps encoded as the model's
context), then take the same scripted keys: walk, turn, stand still, walk back. Writes an animated GIF
(real | neural, 3x) and a PNG strip of every 15th frame beside it, and prints the PSNR per frame range.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from worldsim.game import GameWorld
from worldsim.metrics import psnr
from worldsim.neural import NeuralWorld
from worldsim.world import KEY_NAMES

CONTEXT = 4  # real frames the neural world starts from
# (frames, keys held): a short tour a player would make in the first seconds
SCRIPT = (
    (20, ("forward",)),
    (12, ("turn_right",)),
    (16, ("forward",)),
    (20, ()),
    (12, ("turn_left",)),
    (10, ("back",)),
)


def key_row(names: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([[n in names for n in KEY_NAMES]])


def run(checkpoint: str, frames: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    world = NeuralWorld.from_checkpoint(checkpoint, device="cpu")
    game = GameWorld(batch_size=1, size=(world.height, world.width))
    first = game.reset([seed])
    still = key_row(())
    ctx = [first] + [game.step(still) for _ in range(CONTEXT - 1)]
    world.reset_from_frames(torch.stack(ctx, 1), torch.zeros(1, CONTEXT, len(KEY_NAMES), dtype=torch.bool))
    keys = [key_row(k) for n, k in SCRIPT for _ in range(n)][:frames]
    real, fake = [], []
    for k in keys:
        real.append(game.step(k)[0].numpy())
        fake.append(world.step(k)[0].numpy())
    return real, fake


def side_by_side(real: np.ndarray, fake: np.ndarray, scale: int) -> Image.Image:
    h, w = real.shape[:2]
    pad = 4 * scale
    im = Image.new("RGB", (2 * w * scale + pad, h * scale + 14), (16, 16, 16))
    for i, f in enumerate((real, fake)):
        im.paste(Image.fromarray(f).resize((w * scale, h * scale), Image.NEAREST), (i * (w * scale + pad), 14))
    d = ImageDraw.Draw(im)
    d.text((2, 1), "real game", fill=(220, 220, 220))
    d.text((w * scale + pad + 2, 1), "neural world (same keys)", fill=(220, 220, 220))
    return im


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="tiny-student", help="the neural world (default tiny-student)")
    p.add_argument("--frames", type=int, default=90, help="frames after the real context (default 90)")
    p.add_argument("--seed", type=int, default=0, help="spawn seed of the default level")
    p.add_argument("--scale", type=int, default=3, help="pixel scale of the image (default 3)")
    p.add_argument("--out", type=Path, default=Path("docs/hero.gif"), help="the GIF; the PNG strip beside it")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    real, fake = run(a.checkpoint, a.frames, a.seed)
    ims = [side_by_side(r, f, a.scale) for r, f in zip(real, fake)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    ims[0].save(a.out, save_all=True, append_images=ims[1:], duration=66, loop=0, optimize=True)
    strip = ims[::15]
    sheet = Image.new("RGB", (strip[0].width, strip[0].height * len(strip)))
    for i, im in enumerate(strip):
        sheet.paste(im, (0, i * im.height))
    sheet.save(a.out.with_suffix(".png"))
    r, f = torch.from_numpy(np.stack(real)), torch.from_numpy(np.stack(fake))
    db = psnr(f, r, peak=255.0)
    for lo in range(0, len(real), 30):
        print(f"frames {lo + 1}-{min(lo + 30, len(real))}: PSNR {db[lo : lo + 30].mean():.1f} dB")
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
