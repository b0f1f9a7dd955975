"""An inverse-dynamics model (IDM) for action following (docs/design.md §11): two consecutive frames -> the keys.

Trained on the real game (explorer keys, rendered on the fly), it reads a generated pair of frames the
way it reads a real one: its accuracy on generated frames, next to its accuracy on real frames (the
ceiling), says how well a neural world follows the keys. Labels are the *effective* keys: where both
keys of an opposite pair are held (forward + back) they cancel in the game, so both count as released.
Trained once per frame size and cached as safetensors (config in the metadata; never pickle).
The model and its training loop take any key set and frame size: dataset_idm.py trains the same model
on a recorded dataset (`fit_idm` on its frame pairs). A one-hot key set (a Discrete action space: exactly
one key per frame) is trained with a softmax over the keys and read by argmax; a multi-hot one with one
sigmoid per key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.checkpoint import repo_root
from worldsim.data import Explorer
from worldsim.device import resolve_device
from worldsim.game import GameWorld
from worldsim.train.common import write_json
from worldsim.train.options import add_idm_arguments as add_arguments
from worldsim.world import KEY_NAMES, OPPOSITE_KEYS

log = logging.getLogger(__name__)

IDM_VERSION = 2
SHIFTS = tuple(range(-8, 9))  # horizontal shifts (pixels at 64 wide) tried against the previous frame
SCALES = (0.92, 0.96, 1.0, 1.04, 1.08)  # zooms of the previous frame (walking forward / back)


def effective_keys(keys: torch.Tensor, key_names: Sequence[str]) -> torch.Tensor:
    """`[..., K]` bool keys with both keys of every opposite pair released where both are held."""
    keys = keys.bool().clone()
    index = {n: i for i, n in enumerate(key_names)}
    for a, b in OPPOSITE_KEYS:
        if a in index and b in index:
            both = keys[..., index[a]] & keys[..., index[b]]
            keys[..., index[a]] &= ~both
            keys[..., index[b]] &= ~both
    return keys


def motion_features(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matching costs `[B, 4 * (len(SHIFTS) + len(SCALES))]` of frame b against frame a shifted / zoomed.

    a, b `[B,3,H,W]` in [-1, 1]. A turn shifts the view sideways, a step forward zooms it: the cost is
    lowest at the shift / zoom that happened (per vertical band for shifts, per quadrant for zooms;
    a learned CNN alone needed many times more data to find these). Normalised per sample.
    """
    ga, gb = a.mean(1, keepdim=True), b.mean(1, keepdim=True)  # [B,1,H,W] grey
    H, W = ga.shape[-2:]
    shifts = [round(s * W / 64) for s in SHIFTS]  # the same angles at any width
    m = max(1, max(abs(s) for s in shifts))  # margin: every shifted window stays inside the frame
    feats = []
    for s in shifts:
        d = (gb[..., m : W - m] - ga[..., m - s : W - m - s]).abs()  # [B,1,H,W-2m]
        feats.append(F.adaptive_avg_pool2d(d, (1, 4)).flatten(1))  # [B,4]
    for z in SCALES:
        theta = torch.tensor([[1 / z, 0, 0], [0, 1 / z, 0]], dtype=a.dtype, device=a.device)
        grid = F.affine_grid(theta.expand(a.shape[0], 2, 3), list(ga.shape), align_corners=False)
        d = (gb - F.grid_sample(ga, grid, align_corners=False))[..., m : H - m, m : W - m].abs()
        feats.append(F.adaptive_avg_pool2d(d, (2, 2)).flatten(1))  # [B,4]
    f = torch.cat(feats, 1)
    return (f - f.mean(1, keepdim=True)) / (f.std(1, keepdim=True) + 1e-3)


class IDM(nn.Module):
    """Frames `prev, cur [B,H,W,3]` uint8 -> key logits `[B,K]` (multi-label).

    A small CNN on prev, cur and their difference (motion is what the keys cause), at most 64x64
    (larger frames are area-downsampled: a 5 degree turn or a 0.08 cell step still shows at 64x64),
    plus explicit shift / zoom matching costs (`motion_features`).
    """

    def __init__(self, num_keys: int, width: int = 16):
        super().__init__()
        w = width
        layers, c = [], 9
        for c_out in (w, 2 * w, 2 * w, 4 * w):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), nn.GroupNorm(4, c_out), nn.SiLU()]
            c = c_out
        self.features = nn.Sequential(*layers)
        n = 4 * (len(SHIFTS) + len(SCALES))
        self.motion = nn.Sequential(nn.Linear(n, 128), nn.SiLU())
        self.head = nn.Linear(c * 16 + 128, num_keys)
        self.num_keys, self.width = num_keys, width

    def forward(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        a = prev.movedim(-1, 1).float() / 127.5 - 1  # [B,H,W,3] -> [B,3,H,W] in [-1, 1]
        b = cur.movedim(-1, 1).float() / 127.5 - 1
        x = torch.cat([a, b, 4 * (b - a)], dim=1)  # [B,9,H,W]; the difference is small: scaled up
        if x.shape[-1] > 64 or x.shape[-2] > 64:
            x = F.adaptive_avg_pool2d(x, (min(64, x.shape[-2]), min(64, x.shape[-1])))
        a, b = x[:, :3], x[:, 3:6]
        x = F.adaptive_avg_pool2d(self.features(x), 4).flatten(1)  # [B,4w*16]
        return self.head(torch.cat([x, self.motion(motion_features(a, b))], 1))  # [B,K]


def predicted_keys(logits: torch.Tensor, one_hot: bool = False) -> torch.Tensor:
    """Keys `[B,K]` bool read from IDM logits: the argmax key (one-hot key sets) or every key > 0."""
    if one_hot:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
    return logits > 0


def idm_loss(logits: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, one_hot: bool = False):
    """The training loss on the valid pairs: cross-entropy over the keys (one-hot) or per-key BCE."""
    logits, keys = logits[valid], keys[valid]
    if one_hot:
        return F.cross_entropy(logits, keys.float().argmax(-1))
    return F.binary_cross_entropy_with_logits(logits, keys.float())


def accuracy(
    logits: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None, one_hot: bool = False
) -> dict:
    """Per-key (binary) and exact-match (all keys right) accuracy of logits `[B,K]` vs keys `[B,K]`;
    for a one-hot key set exact match is argmax accuracy."""
    right = predicted_keys(logits, one_hot) == keys.bool()  # [B,K]
    if mask is not None:
        right = right[mask]
    if right.numel() == 0:
        return {"per_key": None, "exact": None, "pairs": 0}
    return {
        "per_key": round(right.float().mean().item(), 4),
        "exact": round(right.all(1).float().mean().item(), 4),
        "pairs": int(right.shape[0]),
    }


def chance_accuracy(keys: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
    """What a model that ignores the frames scores on keys `[B,K]`: per key the majority state, exact
    the most frequent key row (for a one-hot key set: the most frequent action)."""
    keys = keys.bool() if mask is None else keys.bool()[mask]
    if keys.shape[0] == 0:
        return {"per_key": None, "exact": None, "pairs": 0}
    on = keys.float().mean(0)  # [K]
    _, counts = torch.unique(keys, dim=0, return_counts=True)
    return {
        "per_key": round(torch.maximum(on, 1 - on).mean().item(), 4),
        "exact": round(counts.max().item() / keys.shape[0], 4),
        "pairs": int(keys.shape[0]),
    }


def _pairs(game, explorer, steps: int):
    """Yield (prev, cur, effective keys, valid) from the real game; valid = the move was not blocked."""
    prev = game.render()
    for _ in range(steps):
        keys = explorer.act(game.blocked)
        cur = game.step(keys)
        yield prev, cur, effective_keys(keys, game.key_names), ~game.blocked
        prev = cur


def train_idm(
    size: tuple[int, int],
    *,
    key_names: Sequence[str] | None = None,
    steps: int = 1500,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[IDM, dict]:
    """Train an IDM on `steps` batches of real-game frame pairs; returns it and its held-out accuracy."""
    torch.manual_seed(seed)
    device = torch.device(device)
    names = tuple(key_names or KEY_NAMES)
    game = GameWorld(batch_size=batch, size=size, level="default", device=device, key_names=names)
    game.reset([1_000_000 + seed * batch + i for i in range(batch)])
    explorer = Explorer(batch, game.num_keys, seed, device, key_names=game.key_names)
    # blocked moves show no motion: their keys are not recoverable from the frames (valid = unblocked)
    model, loss = fit_idm(_pairs(game, explorer, steps), game.num_keys, steps, lr=lr, device=device,
                          progress=progress)  # fmt: skip
    result = evaluate_idm(model, size, seed=seed + 1, device=device, key_names=names)
    result.update(train_steps=steps, batch=batch, final_loss=loss)
    log.info("IDM trained: held-out real accuracy %s", result)
    return model, result


def fit_idm(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    num_keys: int,
    steps: int,
    *,
    lr: float = 3e-3,
    one_hot: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[IDM, float]:
    """Train a new IDM on `steps` batches of (prev, cur `[B,H,W,3]` uint8, keys `[B,K]`, valid `[B]`)
    pairs; only the valid pairs count. Returns the model (eval mode) and its last loss."""
    from tqdm import tqdm

    model = IDM(num_keys).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # one cycle; a run too short for its warm-up (OneCycleLR divides by zero where 0.1 * steps == 1)
    # keeps the peak rate
    sched = None
    if steps >= 20:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = torch.zeros(())
    for prev, cur, keys, valid in tqdm(pairs, total=steps, desc="idm", disable=not progress):
        loss = idm_loss(model(prev, cur), keys, valid, one_hot)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model.eval(), round(loss.item(), 4)


@torch.no_grad()
def evaluate_idm(
    model: IDM,
    size: tuple[int, int],
    *,
    seed: int = 1,
    batch: int = 32,
    steps: int = 64,
    device="cpu",
    key_names: Sequence[str] | None = None,
) -> dict:
    """Accuracy on held-out real frame pairs (other spawn seeds and explorer keys than training)."""

    names = tuple(key_names or KEY_NAMES)
    game = GameWorld(batch_size=batch, size=size, level="default", device=device, key_names=names)
    game.reset([2_000_000 + seed * batch + i for i in range(batch)])
    explorer = Explorer(batch, game.num_keys, 10_000 + seed, device, key_names=game.key_names)
    logits, keys, valid = [], [], []
    for prev, cur, k, v in _pairs(game, explorer, steps):
        logits.append(model(prev, cur))
        keys.append(k)
        valid.append(v)
    return accuracy(torch.cat(logits), torch.cat(keys), torch.cat(valid))


# ---------------------------------------------------------------------------------------------------
# The cached file
# ---------------------------------------------------------------------------------------------------


def default_idm_path(size: tuple[int, int]) -> Path:

    return repo_root() / "runs" / "idm" / f"idm-{size[0]}x{size[1]}-v{IDM_VERSION}.safetensors"


def save_idm(model: IDM, path: str | os.PathLike, meta: dict) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    info = {"num_keys": model.num_keys, "width": model.width, "version": IDM_VERSION, **meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"idm": json.dumps(info)})
    os.replace(tmp, path)


def load_idm(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[IDM, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        info = json.loads((f.metadata() or {}).get("idm", "{}"))
    if info.get("version") != IDM_VERSION:
        raise ValueError(f"{path} is not a version-{IDM_VERSION} worldsim IDM; delete it to retrain")
    model = IDM(info["num_keys"], info["width"])
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval(), info


def packaged_idm_path(size: tuple[int, int]) -> Path:
    """The IDM shipped with worldsim for this frame size (trained on the default key set)."""
    return Path(__file__).with_name(f"idm-{size[0]}x{size[1]}-v{IDM_VERSION}.safetensors")


def get_idm(
    size: tuple[int, int],
    key_names: Sequence[str],
    *,
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    steps: int = 1500,
    progress: bool = False,
) -> tuple[IDM, dict]:
    """The IDM for this frame size and key set: `path`, else the shipped one, else the cache in runs/idm;
    trained on the real game (and written to `path` or the cache) when none fits."""
    candidates = [Path(path)] if path is not None else [packaged_idm_path(size), default_idm_path(size)]
    for p in candidates:
        if not p.is_file():
            continue
        try:
            model, info = load_idm(p, device)
            if list(info.get("key_names", [])) == list(key_names) and info.get("size") == list(size):
                return model, {**info, "path": str(p)}
            log.warning("%s was trained for other keys or frame size; not using it", p)
        except (ValueError, OSError, KeyError) as e:
            log.warning("cannot read the IDM %s (%s); not using it", p, e)
    target = candidates[-1]
    log.info("training an inverse-dynamics model on the real game (%d steps) into %s", steps, target)
    with torch.enable_grad():  # the evaluator runs under no_grad
        model, result = train_idm(size, key_names=key_names, steps=steps, device=device, progress=progress)
    info = {"size": list(size), "key_names": list(key_names), "heldout_real": result}
    save_idm(model, target, info)
    return model.to(device).eval(), {
        **info,
        "num_keys": model.num_keys,
        "version": IDM_VERSION,
        "path": str(target),
    }


# ---------------------------------------------------------------------------------------------------
# Entry point: `worldsim train idm` (stage module protocol: add_arguments + main) or python -m
# ---------------------------------------------------------------------------------------------------


def main(args) -> int:

    size = tuple(args.size)
    device = resolve_device(args.device)
    model, result = train_idm(size, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                              device=device, progress=True)  # fmt: skip
    out = Path(args.out) if args.out else default_idm_path(size)
    save_idm(model, out, {"size": list(size), "key_names": list(KEY_NAMES), "heldout_real": result})
    write_json(result, out.with_suffix(".json"))
    log.info("IDM written to %s: held-out real accuracy %s", out, result)
    return 0


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m worldsim.evaluation.idm", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
