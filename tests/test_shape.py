"""The package keeps its agreed shape: short functions, and dependencies that point down (nothing below the
command line imports it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ropescale"
MAX_LINES = 80


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_every_function_fits_on_a_screen():
    long = []
    for path in _modules():
        for fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{fn.lineno} {fn.name} ({lines} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


# `python -m ropescale` (__main__.py) is the command line's own entry point
BELOW_CLI = [p for p in _modules() if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"]


@pytest.mark.parametrize("path", BELOW_CLI,
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_the_command_line_imports_it(path):
    imported = _imported(ast.parse(path.read_text(encoding="utf-8")))
    assert not {name for name in imported if name == "ropescale.cli" or name.startswith("ropescale.cli.")}
