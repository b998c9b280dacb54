"""Entry point `ropescale`: builds the sub-command parsers and draws the error boundary.

Each sub-command lives in its own module under `ropescale.cli` and exposes:
    HELP: str                          one line for `ropescale --help`
    add_arguments(parser) -> None      its flags
    run(args) -> int | None            does the work (heavy imports inside, so `--help` stays fast)

User-caused errors (ValueError, TypeError, OSError) end with one line on stderr and exit code 2;
`--debug` shows the traceback instead. Anything else is reported as unexpected, with exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# sub-command name -> module under ropescale.cli; add a line here to add a command
COMMANDS: dict[str, str] = {
    "methods": "methods",
    "plan": "plan",
    "extend": "extend",
    "export": "export",
    "generate": "generate",
    "finetune": "finetune",
    "eval": "eval",
    "report": "report",
    "study": "study",
}


class UsageError(ValueError):
    """A bad command-line flag; the message names the flag and what it accepts."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ropescale", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"ropescale.cli.{module_name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("ROPESCALE_DEBUG") == "1"
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        code = args._run(args)
        return int(code or 0)
    except KeyboardInterrupt:
        print("ropescale: interrupted; finished results and the last checkpoint are kept on disk", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as exc:
        if debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours, not the user's
        if debug:
            traceback.print_exc()
        print(f"unexpected error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
