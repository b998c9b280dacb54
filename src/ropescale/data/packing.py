"""Tokenize documents and pack them into fixed-length rows for training and perplexity."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ropescale.data.corpus import Document


def tokenize_documents(tokenizer, docs: Sequence[Document]) -> list[list[int]]:
    """Token ids of each document, without special tokens (`pack` places BOS/EOS)."""
    return [list(tokenizer.encode(doc.text, add_special_tokens=False)) for doc in docs]


def pack(
    token_docs: Sequence[Sequence[int]], seq_len: int, eos_id: int, bos_id: int | None = None
) -> torch.LongTensor:
    """Concatenate documents into one stream with EOS after each, and cut it into non-overlapping rows.

    With `bos_id`, every row starts with BOS followed by seq_len - 1 stream tokens (each window is scored as
    the start of a sequence, as the tokenizer of the embedded model presents text); without it, rows are
    seq_len stream tokens. The ragged tail is dropped. Returns a LongTensor [n_rows, seq_len].
    Raises ValueError when the stream is shorter than one row.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    stream = [t for doc in token_docs for t in (*doc, eos_id)]
    body = seq_len - (bos_id is not None)
    n_rows = len(stream) // body
    if n_rows == 0:
        raise ValueError(
            f"corpus too short to pack: it has {len(stream)} tokens (EOS included), "
            f"one row of seq_len {seq_len} needs {body}"
        )
    rows = torch.tensor(stream[: n_rows * body], dtype=torch.long).view(n_rows, body)  # [n, body]
    if bos_id is not None:
        rows = torch.cat([torch.full((n_rows, 1), bos_id, dtype=torch.long), rows], dim=1)  # [n, seq_len]
    return rows
