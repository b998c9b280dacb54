"""Results rows -> series and per-length numbers: the data behind every plot and table of the report.

A series is one evaluated configuration: (model, method, factor) plus the task settings except the rope record
(which method and factor already name) when two runs of the same configuration differ in them (say two strides).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ropescale.evaluate.results import Result, ResultsFile, latest

EFFECTIVE_THRESHOLD = 0.8
EFFECTIVE_DEFINITION = (
    "effective length: the longest evaluated length whose passkey accuracy (mean over depths) is at least "
    f"{EFFECTIVE_THRESHOLD:.0%}, with every shorter evaluated length also at least {EFFECTIVE_THRESHOLD:.0%} "
    "(the YaRN paper's passkey context, Table 5); '<L' when the shortest length L already fails")


def load_rows(paths: Sequence[str | Path]) -> list[Result]:
    """Rows of every file, the last row of each (cell, metric) kept. Raises ValueError for a missing or corrupt
    file, naming it, and when the files hold no rows at all."""
    rows: list[Result] = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"results file {str(path)!r} does not exist")
        rows += ResultsFile(path).read()
    if not rows:
        raise ValueError(f"results file(s) {', '.join(map(str, paths))} hold no rows")
    return latest(rows)


@dataclass(frozen=True)
class Series:
    """One evaluated configuration of one task; `label` is what legends and tables show."""

    model: str
    method: str
    factor: float
    settings: str  # canonical JSON of the task settings without "rope"
    label: str


def _settings_without_rope(row: Result) -> dict:
    return {k: v for k, v in row.settings.items() if k != "rope"}


def base_label(model: str, method: str, factor: float, show_model: bool) -> str:
    name = method if method == "default" and factor == 1 else f"{method} ×{factor:g}"
    return f"{model} · {name}" if show_model else name


def series_of(rows: Iterable[Result]) -> dict[tuple, Series]:
    """(model, method, factor, settings) -> Series with a unique, short label."""
    rows = list(rows)
    show_model = len({r.model for r in rows}) > 1
    keys = {}
    for r in rows:
        settings = json.dumps(_settings_without_rope(r), sort_keys=True)
        keys[(r.model, r.method, float(r.factor), settings)] = r
    by_base = defaultdict(list)
    for key in keys:
        by_base[key[:3]].append(key)
    out = {}
    for base, members in by_base.items():
        for key in members:
            label = base_label(*base, show_model)
            if len(members) > 1:  # name what differs between runs of the same configuration
                mine = json.loads(key[3])
                others = [json.loads(k[3]) for k in members if k != key]
                diff = {k: v for k, v in mine.items() if any(o.get(k) != v for o in others)}
                label += " (" + ", ".join(f"{k} {v}" for k, v in sorted(diff.items())) + ")"
            out[key] = Series(*key, label=label)
    return dict(sorted(out.items(), key=lambda item: (item[0][0], method_order(item[0][1]), item[0][2])))


def method_order(method: str) -> int:
    from ropescale.rope import METHODS

    names = list(METHODS)
    return names.index(method) if method in names else len(names)


def series_key(row: Result) -> tuple:
    return (row.model, row.method, float(row.factor), json.dumps(_settings_without_rope(row), sort_keys=True))


def mean_by_length(rows: Iterable[Result], task: str, metric: str) -> dict[int, float]:
    """{length: value} of one task's metric, averaged over depths weighted by each cell's n."""
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        if r.task == task and r.metric == metric:
            acc = sums[r.length]
            acc[0] += r.value * r.n
            acc[1] += r.n
    return {length: s / n for length, (s, n) in sorted(sums.items()) if n}


def by_length(rows: Iterable[Result], task: str, metric: str) -> dict[tuple, dict[int, float]]:
    """series key -> {length: value}, averaging over depths weighted by each cell's n."""
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in rows:
        if r.task == task and r.metric == metric:
            groups[series_key(r)].append(r)
    return {key: mean_by_length(group, task, metric) for key, group in groups.items()}


def grid(rows: Iterable[Result], task: str, metric: str) -> dict[tuple, dict[tuple[int, float], float]]:
    """series key -> {(length, depth): value} for the heat maps."""
    out: dict[tuple, dict] = defaultdict(dict)
    for r in rows:
        if r.task == task and r.metric == metric and r.depth is not None:
            out[series_key(r)][(r.length, r.depth)] = r.value
    return dict(out)


def ruler_grid(rows: Iterable[Result]) -> dict[tuple, dict[tuple[int, str], float]]:
    """series key -> {(length, RULER task or 'average'): score}; tasks that did not fit a length (n = 0) left out."""
    out: dict[tuple, dict] = defaultdict(dict)
    for r in rows:
        if r.task == "ruler" and r.n > 0:
            out[series_key(r)][(r.length, r.metric)] = r.value
    return dict(out)


def effective_length(accuracy_by_length: dict[int, float], threshold: float = EFFECTIVE_THRESHOLD) -> int | None:
    """The longest length with accuracy ≥ threshold and every shorter evaluated length too; None if the
    shortest already fails. See EFFECTIVE_DEFINITION."""
    best = None
    for length in sorted(accuracy_by_length):
        if accuracy_by_length[length] < threshold:
            break
        best = length
    return best


def effective_cell(accuracy_by_length: dict[int, float], threshold: float = EFFECTIVE_THRESHOLD) -> str:
    """The effective length as a table cell: the length, or '<L' when the shortest length L already fails."""
    length = effective_length(accuracy_by_length, threshold)
    return f"<{min(accuracy_by_length)}" if length is None else str(length)


def original_lengths(rows: Iterable[Result]) -> list[int]:
    """The distinct L0 values the rows were measured against."""
    return sorted({int(r.extra["original_length"]) for r in rows if "original_length" in r.extra})
