"""One loader for every place a command takes text: `--data embedded`, a file, a folder, or a HF dataset."""

from __future__ import annotations

import json
from pathlib import Path

from ropescale.data.corpus import Document, embedded_corpus

SOURCES = "'embedded', 'hf:NAME[:CONFIG]', a .txt or .jsonl file, or a folder of them"
SUFFIXES = (".txt", ".jsonl")


def load_texts(source: str, text_field: str = "text", split: str = "train") -> list[Document]:
    """Documents of `source`, in a stable order; empty texts are dropped.

    source:
      "embedded"          the bundled Shakespeare corpus; split "train" or "eval" (held-out plays)
      path/to/file.txt    one document, the whole file
      path/to/file.jsonl  one document per line: the line's `text_field`
      path/to/folder      every .txt and .jsonl file below it, sorted by relative path
      "hf:NAME[:CONFIG]"  `datasets.load_dataset(NAME, CONFIG, split=split)`, column `text_field`; NAME may be a
                          local folder of data files (json, csv, parquet, txt). Needs `pip install ropescale[datasets]`.
    `split` applies to "embedded" and "hf:" sources only. Raises ValueError (one sentence naming the source)
    for a missing path, an unsupported file, non-UTF-8 text, invalid JSON, a line or row without
    `text_field`, and a corpus with no text.
    """
    if source == "embedded":
        docs = embedded_corpus(split)
    elif source.startswith("hf:"):
        docs = _load_hf(source, text_field, split)
    else:
        docs = _load_path(source, text_field)
    texts = [d for d in docs if d.text.strip()]
    if any(d.text for d in docs) and not texts:
        raise ValueError(f"source {source!r} holds only white space: an empty corpus")
    if not texts:
        raise ValueError(f"source {source!r} is an empty corpus: it holds no text")
    docs = texts
    return docs


def _load_path(source: str, text_field: str) -> list[Document]:
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"source {source!r}: path does not exist (expected {SOURCES})")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            kind = path.suffix or "(none)"
            raise ValueError(f"source {source!r}: unsupported file type {kind!r}, expected .txt or .jsonl")
        return _load_file(path, path.name, text_field)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"source {source!r}: folder holds no .txt or .jsonl files, so the corpus is empty")
    return [doc for f in files for doc in _load_file(f, f.relative_to(path).as_posix(), text_field)]


def _load_file(path: Path, name: str, text_field: str) -> list[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"file {str(path)!r} is not UTF-8 text (invalid byte at offset {err.start}); the corpus must be UTF-8") from None
    if path.suffix == ".txt":
        return [Document(name=name, text=text)]
    lines = enumerate(text.splitlines(), start=1)
    return [_jsonl_document(path, name, n, line, text_field) for n, line in lines if line.strip()]


def _jsonl_document(path: Path, name: str, lineno: int, line: str, text_field: str) -> Document:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"file {str(path)!r} line {lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(record, dict) or text_field not in record:
        fields = ", ".join(map(repr, record)) if isinstance(record, dict) else "not an object"
        raise ValueError(
            f"file {str(path)!r} line {lineno} has no field {text_field!r} (fields: {fields}); set the text field"
        )
    if not isinstance(record[text_field], str):
        raise ValueError(f"file {str(path)!r} line {lineno}: field {text_field!r} is not a string")
    return Document(name=f"{name}:{lineno}", text=record[text_field])


def _load_hf(source: str, text_field: str, split: str) -> list[Document]:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"source {source!r} needs the datasets package: pip install ropescale[datasets]"
        ) from None
    name, _, config = source[len("hf:") :].partition(":")
    if not name:
        raise ValueError(f"source {source!r}: expected hf:NAME[:CONFIG], e.g. hf:pg19 or hf:./my_data_files")
    try:
        rows = datasets.load_dataset(name, config or None, split=split)
    except (OSError, ValueError) as err:  # missing files, no network (ConnectionError is an OSError), bad config
        raise ValueError(f"source {source!r}: datasets could not load it ({err})") from None
    if text_field not in rows.column_names:
        raise ValueError(f"source {source!r} has no column {text_field!r} (columns: {', '.join(rows.column_names)})")
    return [Document(name=f"{name}[{i}]", text=text) for i, text in enumerate(rows[text_field])]
