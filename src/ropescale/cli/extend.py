"""`ropescale extend`: rescale a model's RoPE training-free and save a checkpoint that runtimes load as it is."""

from __future__ import annotations

import argparse

HELP = "rescale a model's RoPE (no training) and save a checkpoint directory that loads with from_pretrained"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ropescale.cli.common import add_model_argument, add_spec_arguments

    add_model_argument(parser)
    add_spec_arguments(parser, required=True)
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists and is not empty")


def run(args: argparse.Namespace) -> int:
    from ropescale.cli.common import on_interrupt, quiet_transformers, spec_from_args
    from ropescale.export.hf import check_save_dir, loading_note, save_extended
    from ropescale.models import load_config, load_model, load_tokenizer
    from ropescale.patch import apply

    quiet_transformers()
    on_interrupt(args, lambda: f"nothing written: --output {args.output!r} is saved atomically, so it is as it was")
    check_save_dir(args.output, args.overwrite)  # before the model is loaded: fail fast
    # from the config, before the weights: a model without RoPE (or a rope ropescale cannot read) is refused
    # here, one of the wrong type by apply
    spec = spec_from_args(args, load_config(args.model))
    model = load_model(args.model)
    apply(model, spec)
    output = save_extended(model, load_tokenizer(args.model, required=False), spec, args.output, args.overwrite,
                           provenance={"source": str(args.model or "embedded"), "command": "extend"})
    print(f"wrote {output}: {spec!r}, max_position_embeddings {model.config.max_position_embeddings}")
    print(f"loading: {loading_note(spec)}")
    return 0

