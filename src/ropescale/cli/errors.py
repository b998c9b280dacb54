"""The one place the command line says the library's field names as the flags that set them.

The library names a setting in backticks, as its Python callers know it: "`trials` must be >= 1, got 0". A
command says that name as its flag ("--trials must be >= 1, got 0"), and a name it has no flag for (a recipe key)
without the backticks, so command-line users read the flag they typed.
"""

from __future__ import annotations

import argparse
import re

FIELD = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Field (argparse dest) -> the long flag that sets it, for every optional argument of `parser`."""
    flags: dict[str, str] = {}
    for action in parser._actions:  # argparse has no public list of a parser's arguments
        long = [option for option in action.option_strings if option.startswith("--")]
        if long:
            flags.setdefault(action.dest, long[0])
    return flags


def as_flags(message: str, flags: dict[str, str]) -> str:
    """`message` with every backticked field name said as its flag (or bare, when it has none)."""
    return FIELD.sub(lambda match: flags.get(match.group(1), match.group(1)), message)
