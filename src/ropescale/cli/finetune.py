"""`ropescale finetune [RECIPE.yaml] --method yarn --factor 8 --steps N --output DIR [--resume]`.

A recipe gives the settings; flags given on the command line override them (every flag defaults to "not
given", so a recipe value is replaced only when the flag is typed). Multi-process: `torchrun --nproc_per_node N
-m ropescale finetune ...` or `accelerate launch [--config_file fsdp.yaml] -m ropescale finetune ...`.
"""

from __future__ import annotations

import argparse

from ropescale.cli.args import add_fields, given_fields
from ropescale.cli.common import add_force_argument, on_interrupt
from ropescale.train.config import FinetuneConfig

HELP = "fine-tune a rescaled model at the target length (full, LoRA or PoSE; resumable; 1 CPU to N GPUs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe, then one flag per FinetuneConfig field."""
    parser.add_argument("recipe", nargs="?", default=None, help="YAML recipe (keys = FinetuneConfig fields)")
    add_fields(parser, FinetuneConfig)
    add_force_argument(parser)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """FinetuneConfig from the recipe (if any) with the flags that were given on top."""
    overrides = given_fields(args, FinetuneConfig)
    if args.recipe is not None:
        return FinetuneConfig.from_yaml(args.recipe, **overrides)
    return FinetuneConfig.from_dict(overrides)


def run(args: argparse.Namespace) -> int:
    from ropescale.train import finetune

    config = config_from_args(args)
    if config.output:
        on_interrupt(args, lambda: interrupt_note(config.output))
    finetune(config, force=args.force)
    return 0


def interrupt_note(output: str) -> str:
    """Where an interrupted run's work is: its last checkpoint (and how to continue), else the loss log."""
    from pathlib import Path

    from ropescale.train.checkpoint import LOSS_FILE, checkpoint_dirs

    found = checkpoint_dirs(Path(output))
    if found:
        return (f"last checkpoint {found[-1]}, steps so far in {Path(output) / LOSS_FILE}; continue with the same "
                "command and --resume")
    return (f"no checkpoint was written yet (pass --save-every N to write them); steps so far in "
            f"{Path(output) / LOSS_FILE}")
