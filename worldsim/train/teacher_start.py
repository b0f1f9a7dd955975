"""Where a teacher run starts from: a shipped checkpoint or train state (`--init`), the autoencoder it trains
on (`--autoencoder`), and the config fields the command line may change (`--window`, `--prev-frame`, ...)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from worldsim.checkpoint import load_checkpoint
from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.train import autoencoder as ae_stage
from worldsim.train import common
from worldsim.train.sf_state import load_teacher

log = logging.getLogger(__name__)


_FIELDS = ("window", "local_window", "global_every", "prev_frame")  # what a new run's command line may set


def with_mask(cfg, args):
    """The config with the command line's attention and frame-stacking fields (None: keep the config's)."""
    changes = {k: getattr(args, k) for k in _FIELDS if getattr(args, k, None) is not None}
    if not changes:
        return cfg
    try:
        return cfg.replace(**changes)
    except ValueError as e:
        raise UserError(f"--window/--local-window/--global-every/--prev-frame: {e}") from e


def with_autoencoder(cfg, ae_cfg, patch_size: int | None):
    """The preset's config on another autoencoder. `patch_size` None keeps the preset's tokens per frame
    where the autoencoder's latent grid is a whole multiple of the preset's (a 16x16 grid: patch 2)."""
    if patch_size is None:
        (h, w), (ph, pw) = ae_cfg.latent_hw, cfg.autoencoder.latent_hw
        ratio = h // ph if h % ph == 0 and w % pw == 0 and h // ph == w // pw else 1
        patch_size = max(ratio, 1) * cfg.patch_size
        if patch_size != cfg.patch_size:
            log.info(
                "latent grid %dx%d: patch size %d keeps the preset's %d tokens a frame (--patch-size to change)",
                h, w, patch_size, cfg.tokens_per_frame,
            )  # fmt: skip
    try:
        return cfg.replace(autoencoder=ae_cfg, patch_size=patch_size)
    except ValueError as e:
        raise UserError(f"--patch-size {patch_size}: {e}") from e


def check_resume_mask(cfg, args) -> None:
    for k in _FIELDS:
        given = getattr(args, k, None)
        if given is not None and given != getattr(cfg, k):
            flag = "--" + k.replace("_", "-")
            raise UserError(
                f"{flag} {given}: the run being resumed trains with {k}={getattr(cfg, k)}; drop {flag} "
                f"or start a new --out with --init from this run's teacher.pt"
            )


def load_init(args, device):
    """(config, DiT state dict, autoencoder, its metrics) from --init: a teacher.pt or a checkpoint."""
    if str(args.init).endswith(".pt") and not Path(args.init).is_file():
        raise UserError(
            f"--init {args.init}: no such file; pass the teacher.pt of a `worldsim train teacher` run "
            f"or a shipped checkpoint (.safetensors)"
        )
    try:
        cfg, dit, ae, info = load_teacher(args.init, device)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--init {args.init}: {e}") from e
    if args.autoencoder:
        log.warning("--init %s: using its own autoencoder, not --autoencoder %s", args.init, args.autoencoder)
    log.info(
        "--init %s: starting from its %s weights and autoencoder (--preset is ignored)", args.init, cfg.name
    )
    state = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    budget = info.get("metrics", {}).get("budget")  # what the weights it starts from had cost
    return cfg, state, ae, info.get("autoencoder_metrics", {}), budget


def load_autoencoder(source: str, device: torch.device):
    """(frozen autoencoder, its metrics) from an autoencoder.pt or a shipped checkpoint's autoencoder."""
    if str(source).endswith(".pt"):
        ae = ae_stage.load_autoencoder(source, device)
        return ae, common.load_state(source, flag="--autoencoder").get("metrics", {})
    ckpt = load_checkpoint(source)
    ae = Autoencoder(ckpt.config.autoencoder)
    ae.load_state_dict(ckpt.float_state("autoencoder"))
    log.info("--autoencoder %s: the autoencoder of checkpoint %s", source, ckpt.path)
    return ae.to(device).eval(), ckpt.metrics.get("autoencoder", {})
