"""One result schema for every evaluation task, and the JSON-lines file that holds the rows.

A row is one number: `metric` of `task` for one model/method/factor at one `length` (and `depth` for the
retrieval tasks), measured over `n` units (tokens, trials). `settings` says what else fixes the number (data
source, stride, trials, seed, the full rope spec...): two rows with the same cell key were measured the same way,
so a rerun skips them. `extra` carries context that does not define the cell (L0, head_dim, wall time).

The file is appended to, one finished cell at a time, flushed and fsynced, so a killed run loses only the cell in
progress. A kill in the middle of a write leaves a torn last line: reading ignores it, and the next append cuts it
off first, so the file stays valid. Any other unreadable line is an error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropescale.io import append_lines, read_json_lines

TASKS = ("perplexity", "passkey", "needle", "short-context", "ruler")
# names rows were written with before the CLI's name became the row's: read as the current name, so existing
# results files still resume
LEGACY_TASKS = {"short_context": "short-context"}

# fields of a row and the JSON types they accept (None allowed where the tuple has type(None))
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "method": (str,), "factor": (int, float), "task": (str,), "length": (int,),
    "depth": (int, float, type(None)), "metric": (str,), "value": (int, float), "n": (int,),
    "timestamp": (str,), "settings": (dict,), "extra": (dict,),
}


def canonical(settings: Mapping[str, Any]) -> str:
    """The settings as one canonical JSON string (sorted keys): part of a cell's key."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Result:
    """One measured number; `to_json()` is one line of results.jsonl.

    task: one of TASKS. metric: `nll` (nats/token), `perplexity`, `bits_per_byte` for perplexity; `accuracy`
    (in [0, 1]) and `key_bits_per_digit` for passkey; `accuracy` and `f1` for needle; `perplexity`,
    `baseline_perplexity`, `relative_change` for short-context; for ruler the RULER task's name (`niah_single_1`,
    ..., `vt`, `cwe`, `fwe`; score in [0, 1], n = samples, n = 0 when the task does not fit the length) and
    `average` per length. depth: None where the task has no depth.
    """

    model: str
    method: str
    factor: float
    task: str
    length: int
    depth: float | None
    metric: str
    value: float
    n: int
    timestamp: str = field(default_factory=now)
    settings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task in LEGACY_TASKS:
            object.__setattr__(self, "task", LEGACY_TASKS[self.task])  # frozen: normalised once, when built

    def cell_key(self) -> tuple:
        """What identifies the measurement this row belongs to (all its metrics share it)."""
        return cell_key(self.model, self.method, self.factor, self.task, self.length, self.depth, self.settings)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False, allow_nan=True)

    @classmethod
    def from_dict(cls, record: Any) -> Result:
        """Validate a decoded JSON object; ValueError naming the first bad field."""
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        missing = [name for name in _FIELD_TYPES if name not in record]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        for name, kinds in _FIELD_TYPES.items():
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ValueError(f"field {name!r} has the wrong type ({type(value).__name__})")
        if record["task"] not in TASKS and record["task"] not in LEGACY_TASKS:
            raise ValueError(f"task {record['task']!r} is not one of {', '.join(TASKS)}")
        return cls(**{name: record[name] for name in _FIELD_TYPES})


def cell_key(model: str, method: str, factor: float, task: str, length: int, depth: float | None,
             settings: Mapping[str, Any]) -> tuple:
    return (model, method, float(factor), task, int(length), None if depth is None else float(depth),
            canonical(settings))


class ResultsFile:
    """results.jsonl: append finished cells, read rows back, tell which cells are complete."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[Result]:
        """All rows in file order. A torn last line (no newline, not valid) is ignored; any other bad line raises
        ValueError naming the file and line number. A missing file is an OSError-derived FileNotFoundError."""
        return read_json_lines(self.path, Result.from_dict)

    def completed(self) -> dict[tuple, set[str]]:
        """cell key -> metrics present; a cell is done when every metric its task writes is present."""
        if not self.path.exists():
            return {}
        done: dict[tuple, set[str]] = {}
        for row in self.read():
            done.setdefault(row.cell_key(), set()).add(row.metric)
        return done

    def append(self, rows: Iterable[Result]) -> None:
        """Append rows (one cell's) in one write, then flush and fsync."""
        append_lines(self.path, "".join(row.to_json() + "\n" for row in rows))


def latest(rows: Iterable[Result]) -> list[Result]:
    """One row per (cell key, metric): the last written wins (a cell redone after a partial write)."""
    keep: dict[tuple, Result] = {}
    for row in rows:
        keep[row.cell_key() + (row.metric,)] = row
    return list(keep.values())

