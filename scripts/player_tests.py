"""Neural worlds judged as a player judges them: the same three situations, every model side by side.

    python3 scripts/player_tests.py tiny-student path/to/other.safetensors [--frames 2000] [--out DIR]

Each model starts from the same real frames of the default level (seed `--seed`) and takes the same keys:
  still   no key for `--frames` frames (the view must not change at all);
  away    walk forward 48 frames, turn 180 degrees, walk back 48, turn 180 again, then stand still for
          the rest (in the real game the start view again where the walk hits no wall: seeds 0, 4, 7; a
          wall's slide moves the player elsewhere, and the table's real-game line says how far);
  circles turn right the whole time (the real view repeats every 72 frames: 5 degrees a frame).
Writes `player_tests.png` (per situation the real game's row, then a row per model, frames at a few
depths, each tile titled with its PSNR to the real frame) and `player_tests.json` (PSNR, contrast and
brightness per depth), and prints the table. CPU by default; `--device cuda` is ~10x faster.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without the package installed

from worldsim.evaluation import plots, scores  # noqa: E402
from worldsim.game import GameWorld  # noqa: E402
from worldsim.metrics import psnr  # noqa: E402
from worldsim.neural import NeuralWorld  # noqa: E402
from worldsim.world import KEY_NAMES  # noqa: E402

CONTEXT = 4  # real still frames each world starts from
SITUATIONS = ("still", "away", "circles")
HALF_TURN = 36  # frames of a held turn key that turn the real player 180 degrees


def keys_for(situation: str, frames: int) -> torch.Tensor:
    """`[frames, K]` bool: the keys held at each frame of a situation."""
    names: list[tuple[str, ...]] = []
    if situation == "away":
        for part in ((48, "forward"), (HALF_TURN, "turn_right"), (48, "forward"), (HALF_TURN, "turn_right")):
            names += [(part[1],)] * part[0]
    elif situation == "circles":
        names = [("turn_right",)] * frames
    names = (names + [()] * frames)[:frames]
    return torch.tensor([[k in n for k in KEY_NAMES] for n in names])


def depths_for(situation: str, frames: int) -> list[int]:
    """1-based frame indices shown for a situation (the ones a player would check)."""
    base = {
        "still": [1, 30, 90, 300, 1000, 2000],
        "away": [48, 48 + HALF_TURN, 2 * 48 + HALF_TURN, 2 * 48 + 2 * HALF_TURN, 600, 2000],
        "circles": [72, 144, 288, 720, 1440, 2016],
    }[situation]
    return [d for d in base if d <= frames] or [frames]


def rollout(world: NeuralWorld | GameWorld, keys: torch.Tensor, depths: list[int], desc: str) -> dict:
    """Step every situation's game at once; keep the frames at `depths`, and every frame's brightness and
    contrast as the eval measures them (`scores.gray_mean`, `scores.frame_contrast`)."""
    keep, gray, std = {}, [], []
    for t in tqdm(range(keys.shape[1]), desc=desc, leave=False, mininterval=2.0):
        f = world.step(keys[:, t])  # [S,H,W,3] uint8
        if t + 1 in depths:
            keep[t + 1] = f.cpu()
        gray.append(scores.gray_mean(f).cpu())
        std.append(scores.frame_contrast(f).cpu())
    return {"frames": keep, "gray": torch.stack(gray, 1), "std": torch.stack(std, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="shipped names or .safetensors paths")
    p.add_argument("--frames", type=int, default=2000, help="frames after the real context (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="spawn seed of the default level (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--out", type=Path, default=Path("runs/player-tests"), help="folder for the PNGs and JSON")
    a = p.parse_args(argv)
    if a.frames < 1:
        p.error(f"--frames must be >= 1, got {a.frames}")
    logging.basicConfig(level=logging.WARNING)
    S = len(SITUATIONS)
    keys = torch.stack([keys_for(s, a.frames) for s in SITUATIONS])  # [S,F,K]
    depths = sorted({d for s in SITUATIONS for d in depths_for(s, a.frames)})
    names, runs, size = ["real game"], [], None
    for ckpt in a.checkpoints:
        world = NeuralWorld.from_checkpoint(ckpt, device=a.device, batch_size=S)
        if size is None:  # the real game at the first model's size, started the same way
            size = (world.height, world.width)
            game = GameWorld(batch_size=S, size=size)
            ctx = [game.reset([a.seed] * S)]
            still = torch.zeros(S, len(KEY_NAMES), dtype=torch.bool)
            ctx += [game.step(still) for _ in range(CONTEXT - 1)]
            ctx = torch.stack(ctx, 1)  # [S,T,H,W,3]
            first = ctx[:, -1]
            runs.append(rollout(game, keys, depths, "real game"))
        elif (world.height, world.width) != size:
            p.error(f"{ckpt} makes {world.height}x{world.width} frames, the first model {size[0]}x{size[1]}")
        torch.manual_seed(0)
        world.generator.manual_seed(0)
        world.reset_from_frames(ctx, torch.zeros(S, CONTEXT, len(KEY_NAMES), dtype=torch.bool))
        runs.append(rollout(world, keys.to(world.device), depths, Path(ckpt).stem))
        names.append(Path(ckpt).stem)
        del world

    a.out.mkdir(parents=True, exist_ok=True)
    real = runs[0]
    table: dict = {"seed": a.seed, "frames": a.frames, "device": a.device, "situations": {}}
    rows, labels = [], []  # one image: a block of rows per situation, the real game's first
    C = max(len(depths_for(s, a.frames)) for s in SITUATIONS)  # save_strip reads labels row-major over C
    for i, sit in enumerate(SITUATIONS):
        ds = depths_for(sit, a.frames)
        res = {}
        for name, run in zip(names, runs):
            rows.append([run["frames"][d][i].numpy() for d in ds])
            db = [float(psnr(run["frames"][d][i : i + 1], real["frames"][d][i : i + 1])[0]) for d in ds]
            labels += [
                f"{sit}, {name} {d}" + ("" if run is real else f": {v:.1f} dB") for d, v in zip(ds, db)
            ]
            labels += [""] * (C - len(ds))
            res[name] = {
                "psnr": None if run is real else dict(zip(map(str, ds), [round(v, 2) for v in db])),
                "contrast": {str(d): round(float(run["std"][i, d - 1]), 2) for d in ds},
                "brightness": {str(d): round(float(run["gray"][i, d - 1]), 2) for d in ds},
            }
        to_start = [float(psnr(real["frames"][d][i : i + 1], first[i : i + 1])[0]) for d in ds]
        res["real game"]["psnr_to_start_view"] = dict(zip(map(str, ds), [round(v, 2) for v in to_start]))
        table["situations"][sit] = res
        print(f"\n{sit} (frames {', '.join(map(str, ds))}):")
        for name in names[1:]:
            r = res[name]
            print(f"  {name:28s} PSNR {' / '.join(f'{v:5.1f}' for v in r['psnr'].values())}   "
                  f"contrast {' / '.join(f'{v:4.1f}' for v in r['contrast'].values())}")  # fmt: skip
        print(f"  {'real game, to its start view':28s} PSNR {' / '.join(f'{v:5.1f}' for v in to_start)}   "
              f"contrast {' / '.join(f'{v:4.1f}' for v in res['real game']['contrast'].values())}")  # fmt: skip
    plots.save_strip(rows, labels, a.out / "player_tests.png")
    (a.out / "player_tests.json").write_text(json.dumps(table, indent=1))
    print(f"\nwrote player_tests.png and player_tests.json in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
