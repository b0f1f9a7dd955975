"""`worldsim train autoencoder|teacher|self-forcing`: training entry points (library code in worldsim/train/)."""

from __future__ import annotations

import argparse
import importlib

STAGES = {
    "autoencoder": "worldsim.train.autoencoder",
    "teacher": "worldsim.train.teacher",
    "self-forcing": "worldsim.train.self_forcing",
    "idm": "worldsim.evaluation.idm",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the autoencoder, the teacher, or the self-forcing student")
    stages = p.add_subparsers(dest="stage", metavar="<stage>", required=True)
    for stage, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        sp = stages.add_parser(
            stage, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else stage
        )
        module.add_arguments(sp)
        sp.set_defaults(func=module.main)
