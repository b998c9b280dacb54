"""Entry point `ropescale`: builds the sub-command parsers and draws the error boundary.

Each sub-command lives in its own module under `ropescale.cli` and exposes:
    HELP: str                          one line for `ropescale --help`
    add_arguments(parser) -> None      its flags
    run(args) -> int | None            does the work (heavy imports inside, so `--help` stays fast)

User-caused errors (ValueError, TypeError, OSError) end with one line on stderr and exit code 2;
`--debug` shows the traceback too. Anything else is reported as unexpected, with exit code 1, in one line that
names the log file holding the traceback (`error_log_path()`). Ctrl-C (SIGINT) ends with exit code 130 and one
line saying where the finished work is: a command registers that sentence with
`ropescale.cli.common.on_interrupt(args, describe)` once it knows its output paths. SIGTERM (a job scheduler's
stop, `kill PID`) takes the same path and ends with exit code 143 and "terminated; ...".
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from ropescale.cli.errors import as_flags, flags_of

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
    "search": "search",
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
    parser.commands = {}  # name -> its parser, for the flags an error message names
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"ropescale.cli.{module_name}")
        cmd = parser.commands[name] = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def error_log_path() -> Path:
    """Where the traceback of an unexpected error goes: $ROPESCALE_ERROR_LOG, else <tmp>/ropescale-last-error.log."""
    return Path(os.environ.get("ROPESCALE_ERROR_LOG") or Path(tempfile.gettempdir()) / "ropescale-last-error.log")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _write_error_log(argv: list[str]) -> str:
    """The current traceback (and the command that raised it) into the log; the sentence naming it."""
    path = error_log_path()
    try:
        path.write_text("ropescale " + " ".join(argv) + "\n\n" + traceback.format_exc(), encoding="utf-8")
    except OSError:
        return "rerun with --debug for the traceback"
    return f"traceback in {path} (or rerun with --debug)"


def _interrupted(args, word: str = "interrupted") -> str:
    describe = getattr(args, "_on_interrupt", None)
    try:
        where = describe() if describe is not None else None
    except Exception:  # noqa: BLE001 - the note must never hide the interruption itself
        where = None
    return word + (f"; {where}" if where else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s polite stop) as an interruption: the same cleanup as Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated


def _catch_sigterm():
    """Route SIGTERM to the Ctrl-C path; returns the previous handler (None when not on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("ROPESCALE_DEBUG") == "1"
    args = parser = None
    previous = _catch_sigterm()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        from ropescale.cli.common import quiet_transformers

        quiet_transformers()  # stderr is for our own lines: no weight-loading bars or advisory logs
        code = args._run(args)
        return int(code or 0)
    except Terminated:
        print(f"ropescale: {_interrupted(args, 'terminated')}", file=sys.stderr, flush=True)
        return 143   # 128 + SIGTERM, as a shell reports it
    except KeyboardInterrupt:
        print(f"ropescale: {_interrupted(args)}", file=sys.stderr, flush=True)
        return 130
    except (ValueError, TypeError, OSError) as exc:
        if debug:
            traceback.print_exc()
        flags = flags_of(parser.commands[args.command]) if args is not None and args.command else {}
        print(f"error: {as_flags(_one_line(exc), flags)}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # a bug of ours, not the user's
        if debug:
            traceback.print_exc()
        print(f"unexpected error ({type(exc).__name__}: {_one_line(exc)}); {_write_error_log(argv)}",
              file=sys.stderr, flush=True)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
