"""`ropescale study [RECIPE.yaml] --output DIR`: the whole comparison in one command, resumable.

    ropescale study --output demo-output                                   # the embedded model (the demo)
    ropescale study recipes/study-llama2-7b.yaml --output runs/study-7b    # the same study of a 7B model on GPUs

Without a recipe the defaults are the demo's (recipes/study-embedded.yaml holds the same values). Flags given
on the command line replace the recipe's values. Rerunning with the same --output continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses

from ropescale.cli.args import list_of
from ropescale.cli.common import (add_force_argument, add_model_argument, finite_float, int_list, on_interrupt,
                                  positive_int, quiet_transformers)

HELP = "the whole comparison: training-free methods, equal-budget fine-tuning, evaluation, report.md (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default=None,
                        help="YAML study recipe (default: the embedded demo, as recipes/study-embedded.yaml)")
    parser.add_argument("--output", required=True, help="folder for results.jsonl, runs/, report.md and the PNGs")
    add_model_argument(parser)
    parser.add_argument("--factor", type=finite_float, default=None, help="scale factor s of every method (16)")
    parser.add_argument("--lengths", type=int_list, default=None,
                        help="comma-separated evaluation lengths (default: 1,2,4,8,16 × L0)")
    parser.add_argument("--methods", type=list_of(str, "method names"), default=None,
                        help="comma-separated training-free methods (default: linear,ntk,dynamic,yarn,dynamic-yarn)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps of every fine-tune run (replaces the recipe's, a run's own included)")
    parser.add_argument("--no-finetune", dest="no_finetune", action="store_true",
                        help="training-free methods only (no fine-tune runs)")
    add_force_argument(parser)


def config_from_args(args: argparse.Namespace):
    from ropescale.study import StudyConfig

    overrides = {"output": args.output, "model": args.model, "factor": args.factor, "lengths": args.lengths}
    if args.methods is not None:
        overrides["methods"] = args.methods
    if args.no_finetune:
        overrides["runs"] = []
    config = StudyConfig.from_yaml(args.recipe, **overrides) if args.recipe else StudyConfig.from_dict({}, **overrides)
    if args.steps is not None:   # every run's: a run's own `steps` in the recipe gives way to the flag too
        runs = tuple(dataclasses.replace(r, settings={**r.settings, "steps": args.steps}) if "steps" in r.settings
                     else r for r in config.runs)
        config = dataclasses.replace(config, finetune={**config.finetune, "steps": args.steps}, runs=runs)
    return config


def run(args: argparse.Namespace) -> int:
    from ropescale.study import run_study

    quiet_transformers()
    config = config_from_args(args)
    on_interrupt(args, lambda: f"finished evaluations ({config.output}/results.jsonl) and fine-tune checkpoints "
                 f"({config.output}/runs/) are kept; rerun the same command to continue where it stopped")
    run_study(config, force=args.force)
    return 0
