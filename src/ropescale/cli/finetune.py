"""`ropescale finetune [RECIPE.yaml] --method yarn --factor 8 --steps N --output DIR [--resume]`.

A recipe gives the settings; flags given on the command line override them (every flag defaults to "not
given", so a recipe value is replaced only when the flag is typed). Multi-process: `torchrun --nproc_per_node N
-m ropescale finetune ...` or `accelerate launch [--config_file fsdp.yaml] -m ropescale finetune ...`.
"""

from __future__ import annotations

import argparse

from ropescale.cli.common import (add_model_argument, add_spec_arguments, finite_float, non_negative_int,
                                  on_interrupt, positive_int)

HELP = "fine-tune a rescaled model at the target length (full, LoRA or PoSE; resumable; 1 CPU to N GPUs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ropescale.train.config import SCHEDULES, TRACKERS

    parser.add_argument("recipe", nargs="?", default=None, help="YAML recipe (keys = FinetuneConfig fields)")
    add_model_argument(parser)
    add_spec_arguments(parser)
    parser.add_argument("--original-max-position-embeddings", type=positive_int, default=None,
                        help="L0, the length the model was trained at (default: read from its config.json)")
    parser.add_argument("--output", default=None, help="run directory: final checkpoint, loss.csv, checkpoints/")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --output from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="delete a previous run in --output and start again")
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None, help="'embedded' (default), a .txt/.jsonl file or folder, hf:NAME")
    data.add_argument("--text-field", default=None, help="jsonl/dataset column holding the text (default: text)")
    data.add_argument("--data-split", default=None, help="split of 'embedded' or hf: data (default: train)")
    data.add_argument("--seq-len", type=positive_int, default=None,
                      help="training sequence length (default: L0 x factor, the target length)")
    data.add_argument("--passkey-share", type=finite_float, default=None,
                      help="fraction of rows made of synthetic passkey documents, fillers from --data, scored on their "
                           "answers only (default 0)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default 200)")
    opt.add_argument("--batch-size", type=positive_int, default=None, help="rows per process per micro-step (1)")
    opt.add_argument("--grad-accum", type=positive_int, default=None, help="micro-steps per optimizer step (1)")
    opt.add_argument("--lr", type=finite_float, default=None, help="peak learning rate (default 2e-5, YaRN)")
    opt.add_argument("--weight-decay", type=finite_float, default=None, help="AdamW weight decay (default 0)")
    opt.add_argument("--warmup-steps", type=non_negative_int, default=None, help="linear warmup steps (20)")
    opt.add_argument("--schedule", choices=SCHEDULES, default=None, help="after warmup (default constant)")
    opt.add_argument("--max-grad-norm", type=finite_float, default=None, help="clip gradients (1.0; 0 = off)")
    opt.add_argument("--seed", type=int, default=None, help="seed of data order, PoSE and LoRA init (42)")
    mem = parser.add_argument_group("memory")
    mem.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                     default=None, help="keep activations instead of recomputing them (faster, more memory)")
    mem.add_argument("--loss-chunk-size", type=positive_int, default=None,
                     help="positions per output-layer chunk in the loss (default: 128 MiB of logits)")
    strat = parser.add_argument_group("strategies")
    strat.add_argument("--lora-rank", type=positive_int, default=None,
                       help="LoRA on q,k,v,o with trainable embeddings and norms (LongLoRA); merged on save")
    strat.add_argument("--lora-alpha", type=finite_float, default=None, help="LoRA alpha (default 2 x rank)")
    strat.add_argument("--pose-window", type=positive_int, default=None,
                       help="PoSE: train on windows of this many tokens with positions skipped over the target")
    ck = parser.add_argument_group("checkpoints and reporting")
    ck.add_argument("--save-every", type=positive_int, default=None, help="checkpoint every K steps")
    ck.add_argument("--keep-checkpoints", type=positive_int, default=None, help="checkpoints kept (default 2)")
    ck.add_argument("--report-to", choices=TRACKERS, default=None, help="also log to TensorBoard or W&B")


def config_from_args(args: argparse.Namespace):
    """FinetuneConfig from the recipe (if any) with the flags that were given on top."""
    import dataclasses

    from ropescale.train.config import FinetuneConfig

    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.recipe is not None:
        return FinetuneConfig.from_yaml(args.recipe, **overrides)
    return FinetuneConfig.from_dict(overrides)


def run(args: argparse.Namespace) -> int:
    from ropescale.train import finetune

    config = config_from_args(args)
    if config.output:
        on_interrupt(args, lambda: interrupt_note(config.output))
    finetune(config)
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
