"""`ropescale methods`: the table of RoPE scaling methods."""

from __future__ import annotations

import argparse

HELP = "list the RoPE scaling methods: what each does, its parameters, its transformers type"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags."""


def table() -> str:
    """The methods table as aligned text: name, description, parameters, transformers rope_type."""
    from ropescale.rope import METHODS

    rows = [("method", "what it does", "parameters", "transformers")]
    for m in METHODS.values():
        params = ", ".join(("rope_theta",) + m.parameters)
        native = m.hf_type if m.hf_equivalent.startswith("native") else m.hf_equivalent
        rows.append((m.name, m.description, params, native))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3]
                     for row in rows)


def run(args: argparse.Namespace) -> int:
    print(table())
    return 0
