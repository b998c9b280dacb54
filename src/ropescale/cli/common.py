"""Flags that several commands share: `--model`, and the spec flags `--method/--factor/...`.

One parser and one builder, so `extend`, `eval`, `finetune` and `study` read a spec the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

from ropescale.cli.args import finite_float, list_of

from ropescale.model_info import SPEC_KNOBS, ModelInfo, check_spec_fits, spec_for_model
from ropescale.rope.spec import read_spec



def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


# '256,512,1024' -> [256, 512, 1024]; an empty or malformed entry is an error naming it
int_list = list_of(positive_int, "positive integers")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="checkpoint directory, .gguf file or Hugging Face Hub id (default: the embedded model)")


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="run even when the memory estimate says the largest unit of work does not fit")


def add_spec_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """--method, --factor and the method knobs; without --method the model runs as it is saved."""
    from ropescale.rope import METHODS

    chosen = parser.add_mutually_exclusive_group(required=required)  # a method, or a spec file that holds one
    chosen.add_argument("--method", default=None, choices=list(METHODS),
                        metavar="METHOD", help="scaling method: " + ", ".join(METHODS))
    add_spec_file_argument(chosen)
    parser.add_argument("--factor", type=finite_float, default=None,
                        help="scale factor s = target length / L0 (default: 1)")
    for dest, text in SPEC_KNOBS.items():
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, type=finite_float, default=None, help=text)


def add_spec_file_argument(parser) -> None:
    parser.add_argument("--spec", default=None, metavar="FILE", help="a RopeSpec as JSON (e.g. the best.json of "
                        "`ropescale search`) instead of --method/--factor")


def spec_file(args: argparse.Namespace, model_or_config, others: tuple[str, ...] = ("factor", *SPEC_KNOBS)):
    """The RopeSpec of --spec FILE checked against the model (None without --spec); any of `others` given beside
    it is an error: the file holds the method, the factor and every knob."""
    if getattr(args, "spec", None) is None:
        return None
    given = [name for name in others if getattr(args, name, None) is not None]
    if given:
        raise ValueError(f"--spec and --{given[0].replace('_', '-')} exclude each other: the spec file holds the "
                         "method, the factor and its settings")
    return check_spec_fits(ModelInfo.from_config(model_or_config), read_spec(args.spec))


def spec_from_args(args: argparse.Namespace, model_or_config):
    """The RopeSpec the flags ask for, completed from the model's config (θ, L0, partial rotary), or read from
    --spec FILE; None when neither --method nor --spec was given. Flags that the method does not read are an error
    from RopeSpec naming the field."""
    from_file = spec_file(args, model_or_config)
    if from_file is not None:
        return from_file
    knobs = {name: getattr(args, name, None) for name in SPEC_KNOBS}
    return spec_for_model(model_or_config, getattr(args, "method", None), getattr(args, "factor", None), **knobs)


def quiet_transformers() -> None:
    """Keep a command's stderr for its own messages: no transformers progress bars (loading/saving a few
    shards) and no advisory log lines (e.g. "Unrecognized keys" for our `ropescale_*` record keys)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    if "DS_ACCELERATOR" not in os.environ and importlib.util.find_spec("deepspeed") is not None:
        import torch

        if not torch.cuda.is_available():   # DeepSpeed (imported with transformers' integrations) prints a
            os.environ["DS_ACCELERATOR"] = "cpu"   # warning to stdout when it finds no GPU to pick


def on_interrupt(args: argparse.Namespace, describe) -> None:
    """Register what Ctrl-C should tell the user about this command's finished work: `describe()` returns one
    sentence (where the results or the last checkpoint are, and how to continue); `ropescale.cli.main` prints it
    after "interrupted" and exits with code 130."""
    args._on_interrupt = describe
