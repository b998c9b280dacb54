"""Files that must never be seen half written: atomic writes, and the readers of the files ropescale appends to.

- `write_atomic` and its text/JSON/CSV forms write a temporary file beside the target, then `os.replace` it, so
  a reader (or a run killed mid-write) sees the old file or the new one, never half of one.
- `append_lines` / `read_json_lines`: JSON-lines files that grow one flushed, fsynced write at a time
  (results.jsonl); a kill mid-write leaves a torn last line, which reading ignores and the next append cuts off.
- `drop_json_lines`: such a file rewritten (atomically) without some of its rows (rows of a retrained model).
- `read_loss_csv`: a fine-tuning run's loss.csv (one row per optimizer step).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

Row = TypeVar("Row")


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on `.NAME.tmp` in `path`'s folder (created if missing), then rename it to `path`.

    The temporary name is fixed, so the next write replaces one left by a killed process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, *, sort_keys: bool = False) -> Path:
    """JSON with an indent of 2 and a final newline."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Sequence[Any]]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)

    return write_atomic(path, write)


# ---------------------------------------------------------------- JSON lines, appended as they are measured


def append_lines(path: str | os.PathLike, text: str) -> None:
    """Append `text` (whole lines) in one write, then flush and fsync; a torn last line is cut off first."""
    if not text:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _cut_torn_line(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def drop_json_lines(path: str | os.PathLike, drop: Callable[[dict], bool]) -> int:
    """Rewrite a JSON-lines file (atomically) without the lines whose object `drop` selects; returns how many went.
    A missing file drops nothing; a line that is not a JSON object stays as it is, a torn last line goes."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_bytes().split(b"\n")
    keep, dropped = [], 0
    for line in lines[:-1]:   # the last piece is empty, or a torn write
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict) and drop(record):
            dropped += 1
        else:
            keep.append(line + b"\n")
    if dropped:
        write_atomic(path, lambda tmp: tmp.write_bytes(b"".join(keep)))
    return dropped


def _cut_torn_line(path: Path) -> None:
    """Drop an unterminated last line (left by a kill mid-write) so the next line starts on its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        data = handle.seek(0) or handle.read()
        handle.truncate(data.rfind(b"\n") + 1)


def read_json_lines(path: str | os.PathLike, parse: Callable[[Any], Row]) -> list[Row]:
    """`parse(object)` of every non-blank line, in file order. A torn last line (no newline, not parseable) is
    ignored; any other bad line raises ValueError naming the file and line number (parse raises ValueError or
    TypeError for an object it rejects). A missing file is FileNotFoundError."""
    lines = Path(path).read_bytes().split(b"\n")
    torn = lines[-1]  # empty when the file ends with a newline
    rows = [_parse_line(path, line, number, parse) for number, line in enumerate(lines[:-1], start=1) if line.strip()]
    if torn.strip():
        try:
            rows.append(_parse_line(path, torn, len(lines), parse))
        except ValueError:
            pass  # a write cut short by a kill: what it held is simply not there
    return rows


def _parse_line(path, line: bytes, number: int, parse: Callable[[Any], Row]) -> Row:
    try:
        return parse(json.loads(line.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ValueError(f"results file {str(path)!r} line {number} is not a result row ({reason})") from None


# ---------------------------------------------------------------- loss.csv


def read_loss_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """A fine-tuning run's loss.csv as a list of dicts of floats, one per complete row (a row cut short by a kill
    is left out). ValueError naming the file when it is missing or has no step and loss columns."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"loss curve {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"step", "loss"} <= set(reader.fieldnames or ()):
            raise ValueError(f"loss curve {str(path)!r} has no step and loss columns")
        return [{k: float(v) for k, v in row.items()} for row in reader
                if all(v not in (None, "") for v in row.values())]
