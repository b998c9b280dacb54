"""`ropescale report results.jsonl [more.jsonl ...] --output DIR`: plots and report.md from results files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropescale.cli.eval import unit_float

HELP = "draw perplexity/passkey/needle/RULER/scaling plots and write report.md from results files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results files written by `ropescale eval`")
    parser.add_argument("--output", default="report", help="folder for the PNGs and report.md (default: %(default)s)")
    parser.add_argument("--loss-curve", dest="loss_curves", action="append", default=None, metavar="RUN/loss.csv",
                        help="a fine-tuning run's loss.csv, drawn in loss.png (repeatable; labelled by its folder)")
    parser.add_argument("--threshold", type=unit_float, default=None,
                        help="RULER effective length: the average each length must keep (default: RULER's 0.856)")


def run(args: argparse.Namespace) -> int:
    from ropescale.cli.common import on_interrupt
    from ropescale.report import write_report

    on_interrupt(args, lambda: f"each file in {args.output!r} is written atomically: whole or not yet there")
    curves = {}
    for p in args.loss_curves or ():
        name = Path(p).resolve().parent.name
        curves[name if name not in curves else str(p)] = p
    threshold = {} if args.threshold is None else {"threshold": args.threshold}
    for path in write_report(args.results, args.output, loss_curves=curves, **threshold):
        print(path)
    return 0
