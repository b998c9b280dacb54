"""`ropescale eval TASK`: perplexity against length, passkey, needle in a haystack, short-context regression.

    ropescale eval perplexity --lengths 256,512,1024,2048,4096 --method yarn --factor 16 --output results.jsonl
    ropescale eval passkey --depths 0,0.5,1 --trials 10 --method dynamic --factor 16
    ropescale eval needle --model out/ckpt --lengths 1024,2048
    ropescale eval short-context --method yarn --factor 16          # perplexity at L0 vs the unscaled model
    ropescale eval ruler --lengths 256,512 --samples 10 --log-samples   # RULER's synthetic tasks; outputs kept

Rows go to --output (JSON lines), one finished cell at a time; rerunning the same command skips finished cells.
`ropescale report` draws the plots and report.md from them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ropescale.cli.args import list_of
from ropescale.evaluate import TASK_CLASSES
from ropescale.cli.common import (add_force_argument, add_model_argument, add_spec_arguments, int_list,
                                  on_interrupt, positive_int, spec_from_args)

HELP = ("evaluate a model at long context: perplexity, passkey, needle, RULER, short-context "
        "(rows to results.jsonl)")

def task_fields(task: str) -> set[str]:
    """The settings a task reads: its dataclass fields; any other task flag given is an error."""
    return {field.name for field in dataclasses.fields(TASK_CLASSES[task])}


# every task setting that has a flag here (a task's other fields, e.g. filler_name, are set from these)
TASK_FLAGS = sorted(set().union(*map(task_fields, TASK_CLASSES)) - {"filler_name", "haystack_name"} | {"n_depths"})


def unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is not in [0, 1]")
    return value


# '0,0.25,1' -> [0.0, 0.25, 1.0]; an empty, malformed or out-of-range entry is an error naming it
unit_float_list = list_of(unit_float, "numbers in [0, 1]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=list(TASK_CLASSES), help="what to measure")
    add_model_argument(parser)
    add_spec_arguments(parser)
    parser.add_argument("--output", default="results.jsonl", help="results file, appended (default: %(default)s)")
    parser.add_argument("--label", default=None, help="model name written in the rows (default: the --model value)")
    parser.add_argument("--lengths", type=int_list, default=None,
                        help="comma-separated lengths in tokens (default: 1,2,4,8,16 × L0)")
    parser.add_argument("--data", default=None, help="perplexity text: 'embedded' (held-out plays; default), a "
                        ".txt/.jsonl file, a folder, or hf:NAME")
    parser.add_argument("--split", default=None, help="split of --data for embedded and hf: sources (default: eval)")
    parser.add_argument("--text-field", dest="text_field", default=None, help="JSON field holding the text")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="sliding-window perplexity: score only the last STRIDE tokens of each window")
    parser.add_argument("--max-tokens", dest="max_tokens", type=positive_int, default=None,
                        help="perplexity: score only the first MAX_TOKENS tokens of the text, the same text at "
                        "every length (default: all of it)")
    parser.add_argument("--max-windows", dest="max_windows", type=positive_int, default=None,
                        help="score at most this many windows per length (default: all the text)")
    depths = parser.add_mutually_exclusive_group()
    depths.add_argument("--depths", type=unit_float_list, default=None,
                        help="comma-separated depths in [0, 1] (default: 0,0.25,0.5,0.75,1)")
    depths.add_argument("--n-depths", dest="n_depths", type=positive_int, default=None,
                        help="this many depths evenly spread over [0, 1]")
    parser.add_argument("--trials", type=positive_int, default=None, help="trials per cell (passkey 10, needle 5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the keys / haystack offsets (default 0)")
    parser.add_argument("--digits", type=positive_int, default=None, help="passkey digits (default 5)")
    parser.add_argument("--filler", type=Path, default=None, help="text file replacing the passkey filler")
    parser.add_argument("--haystack", type=Path, default=None, help="text file for the needle haystack "
                        "(default: the held-out plays) or RULER's essay haystack (default: the bundled essays)")
    parser.add_argument("--needle", default=None, help="the needle sentence")
    parser.add_argument("--question", default=None, help="the question, ending where the answer starts")
    parser.add_argument("--answer", default=None, help="the answer span (must occur in the needle)")
    parser.add_argument("--tasks", type=list_of(str, "RULER task names"), default=None,
                        help="ruler: comma-separated RULER tasks (default: all 13; qa_1 and qa_2 need --qa-file)")
    parser.add_argument("--qa-file", dest="qa_files", type=Path, action="append", default=None,
                        help="ruler: a SQuAD (qa_1) or HotpotQA (qa_2) dev-set JSON file; repeat for both")
    parser.add_argument("--samples", type=positive_int, default=None, help="ruler: samples per task and length "
                        "(default 10)")
    parser.add_argument("--chat-template", dest="chat_template", choices=["auto", "none"], default=None,
                        help="ruler: wrap prompts in the tokenizer's chat template when it has one (auto, the "
                        "default) or never (none)")
    parser.add_argument("--log-samples", dest="log_samples", action="store_true",
                        help="passkey, needle, ruler: write each prompt's output to OUTPUT.samples.jsonl")
    parser.add_argument("--log-prompts", dest="log_prompts", action="store_true",
                        help="with --log-samples: keep each prompt's text too (large at long lengths)")
    parser.add_argument("--baseline-model", dest="baseline_model", default=None,
                        help="short-context baseline (default: the model without --method)")
    parser.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None,
                        help="windows / trials per forward pass (default: perplexity 1, passkey and needle 8)")
    parser.add_argument("--chunk-size", dest="chunk_size", type=positive_int, default=None,
                        help="positions per logits chunk (default: 128 MiB of logits per chunk)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="model weights dtype (default: %(default)s; RoPE math stays fp32)")
    add_force_argument(parser)


def _read_text(flag: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{flag} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{flag} {str(path)!r} is a directory; give a text file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{flag} {str(path)!r} is not UTF-8 text (invalid byte at offset {err.start}); give a UTF-8 text file") from None
    if not text.strip():
        raise ValueError(f"{flag} {str(path)!r} holds no text")
    return text


def _task_fields(args: argparse.Namespace) -> dict:
    """The task's constructor arguments from the flags; a flag the task does not read is an error."""
    from ropescale.evaluate.passkey import depth_grid

    reads = task_fields(args.task)
    stray = [d for d in TASK_FLAGS if getattr(args, d) is not None and d not in reads
             and not (d == "n_depths" and "depths" in reads)]
    if stray:
        flags = ", ".join("--" + d.replace("_", "-") for d in stray)
        raise ValueError(f"{flags} do(es) not apply to `eval {args.task}`")
    fields = {name: getattr(args, name) for name in reads & set(TASK_FLAGS) if getattr(args, name) is not None}
    if args.n_depths is not None:
        fields["depths"] = depth_grid(args.n_depths)
    if "filler" in fields:
        fields["filler_name"] = str(args.filler)
        fields["filler"] = _read_text("--filler", args.filler)
    if "haystack" in fields:
        fields["haystack_name"] = str(args.haystack)
        fields["haystack"] = _read_text("--haystack", args.haystack)
    return fields


def _summary(rows) -> list[str]:
    cells: dict[tuple, list[str]] = {}
    for row in rows:
        where = f"length {row.length}" + ("" if row.depth is None else f" depth {row.depth:g}")
        said = f"{row.metric} skipped" if row.n == 0 else f"{row.metric} {row.value:.4g}"
        cells.setdefault((row.length, row.depth, where), []).append(said)
    return [f"  {key[2]}: " + ", ".join(parts) for key, parts in cells.items()]


def run(args: argparse.Namespace) -> int:
    import torch

    from ropescale.evaluate import ResultsFile, evaluate
    from ropescale.evaluate.samples import samples_path
    from ropescale.models import load_config, resolve_device

    task = TASK_CLASSES[args.task](**_task_fields(args))
    if args.task == "ruler" and task.without_file():
        print(f"ruler: {', '.join(task.without_file())} skipped: no --qa-file (SQuAD JSON for qa_1, HotpotQA JSON "
              "for qa_2)")
    output = ResultsFile(args.output)
    on_interrupt(args, lambda: f"every finished cell is in {args.output}; rerun the same command to measure the rest")
    if output.path.is_dir():
        raise ValueError(f"--output {args.output!r} is a directory; give a .jsonl file")
    if output.path.exists():
        output.read()  # a corrupt results file fails now, with its line number, not after an hour of work
    config = load_config(args.model)
    spec = spec_from_args(args, config)
    device = resolve_device(args.device)
    if args.log_prompts and not args.log_samples:
        raise ValueError("--log-prompts needs --log-samples")
    if args.log_samples and args.task in ("perplexity", "short-context"):
        raise ValueError(f"--log-samples applies to the generative tasks (passkey, needle, ruler), not {args.task}")
    samples = samples_path(output.path) if args.log_samples else None
    rows = evaluate(task, args.model, output=output, spec=spec, label=args.label, device=device,
                    dtype=getattr(torch, args.dtype), samples=samples, log_prompts=args.log_prompts,
                    force=args.force)
    if not rows:
        print(f"{args.task}: every cell is already in {args.output}; nothing to do")
        return 0
    print(f"{args.task}: wrote {len(rows)} rows to {args.output}"
          + (f"; outputs in {samples}" if samples is not None else ""))
    print("\n".join(_summary(rows)))
    return 0
