"""Command-line flags derived from the settings dataclasses: one flag per field, with its type, help and default.

`add_fields(parser, FinetuneConfig)` adds `--steps`, `--lora-rank`, ... from the fields' annotations and
`ropescale.settings.setting` metadata. Every flag defaults to "not given" (None), so a recipe's value is replaced
only when the flag is typed; the help shows the dataclass default. List-valued flags are comma-separated and
parse strictly: an empty or malformed entry is an error naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable


def _entries(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    for number, item in enumerate(items, start=1):
        if not item:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}: entry {number} is empty")
    return items


def list_of(parse: Callable[[str], object], what: str) -> Callable[[str], list]:
    """A strict parser of 'a,b,c': every entry parsed by `parse`; an empty or bad entry is named."""
    def parse_list(text: str) -> list:
        values = []
        for item in _entries(text, f"a comma-separated list of {what}"):
            try:
                values.append(parse(item))
            except (ValueError, argparse.ArgumentTypeError):
                raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}: "
                                                 f"entry {item!r} is not one") from None
        return values

    parse_list.__name__ = f"list of {what}"
    return parse_list


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def strict_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


PARSERS = {int: strict_int, float: finite_float, str: str}
LISTS = {int: list_of(strict_int, "integers"), float: list_of(finite_float, "numbers"), str: list_of(str, "names")}


def _parser_of(annotation) -> Callable[[str], object] | None:
    """The text parser of a field type (X | None counts as X); None for bool, which is a switch."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple):
        return LISTS[typing.get_args(annotation)[0]]
    return None if annotation is bool else PARSERS[annotation]


def add_fields(parser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass `cls` that has setting metadata (and is not in `skip`)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.metadata.get("flag", False):
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        text, choices = field.metadata["help"], field.metadata.get("choices")
        parse = _parser_of(hints[field.name])
        if parse is None and default is True:
            parser.add_argument("--no-" + flag[2:], dest=field.name, action="store_false", default=None,
                                help=f"turn off: {text}")
        elif parse is None:
            parser.add_argument(flag, dest=field.name, action="store_true", default=None, help=text)
        else:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            parser.add_argument(flag, dest=field.name, type=parse, default=None, choices=choices,
                                metavar=None if choices is None else field.name.upper(),
                                help=text + ("" if default is None else f" (default: {shown})"))


def given_fields(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` whose flags were given."""
    names = {field.name for field in dataclasses.fields(cls)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}
