"""`worldsim train autoencoder|teacher|self-forcing|idm|export`: training entry points (library code in
worldsim/train/). The flags come from worldsim/train/options.py, which needs no torch; a stage's module
is imported when that stage runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from worldsim.train import options

# stage -> (one-line help, its flags, the module whose `handler` runs it)
STAGES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str, str]] = {
    "autoencoder": (
        "train the frame autoencoder on rendered game frames",
        options.add_autoencoder_arguments,
        "worldsim.train.autoencoder",
        "main",
    ),
    "teacher": (
        "train the teacher DiT (rectified flow, diffusion forcing) on latent clips",
        options.add_teacher_arguments,
        "worldsim.train.teacher",
        "main",
    ),
    "self-forcing": (
        "distill a few-step student from a teacher (self-forcing, DMD)",
        options.add_self_forcing_arguments,
        "worldsim.train.self_forcing",
        "main",
    ),
    "idm": (
        "train the inverse-dynamics model the action-following metric reads",
        options.add_idm_arguments,
        "worldsim.evaluation.idm",
        "main",
    ),
    "export": (
        "export a teacher train state to a shipped checkpoint and its card (--int8: the 8-bit file too)",
        options.add_export_arguments,
        "worldsim.train.export",
        "run",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the autoencoder, the teacher, the self-forcing student or the IDM; export"
    )
    stages = p.add_subparsers(dest="stage", metavar="<stage>", required=True)
    for stage, (help_line, add_arguments, _, _) in STAGES.items():
        sp = stages.add_parser(stage, help=help_line, description=help_line)
        add_arguments(sp)
        sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _, _, module_name, handler = STAGES[args.stage]
    return getattr(importlib.import_module(module_name), handler)(args)  # torch loads here, not for --help
