"""Perplexity against length: mean next-token NLL over windows of held-out text, chunked, never full logits.

Windows. The documents are tokenized without special tokens and joined into one stream with EOS after each
(`ropescale.data.pack`); a window of `length` tokens is BOS (when the tokenizer has one) followed by
length − 1 stream tokens, as the embedded model saw text in pretraining.
- non-overlapping (default): consecutive windows; every token after BOS is scored given everything before it
  in its window. Windows near the start of a window see little context, so this is "perplexity of a fresh
  context of this length", the PI/YaRN papers' proof-pile numbers (one pass per truncated document).
- sliding (`stride=S`): a window starts every S stream tokens and scores only its last S tokens (the first
  window scores all of its own), so each scored token sees at least length − S tokens of context: the YaRN
  repo's `eval/perplexity.py` GovReport evaluation (stride 256), run over the joined stream instead of per
  document.

Metrics of a length: nll = Σ NLL / scored tokens (nats/token); perplexity = exp(nll); bits_per_byte =
Σ NLL / ln 2 / Σ bytes(scored token), where bytes(token) is the UTF-8 length of the text that token contributes
(`token_byte_lengths`: from the tokenizer's vocabulary, special tokens 0). EOS targets are scored (their NLL
counts) but carry no bytes, as in `scripts/measure_embedded.py`: bits per byte of the *text*, tokenizer-free.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ropescale.evaluate.driver import Cell, Measurement, Subject
from ropescale.memory_plan import EvalShape
from ropescale.train.loss import IGNORE_INDEX, causal_lm_loss, shift_labels


def window_nll(model, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
               chunk_size: int | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and the scored-token count of windows [B, T] under `model`, without gradients.

    labels: [B, T] already shifted targets with IGNORE_INDEX where not scored (default: every next token).
    Logits exist for `chunk_size` positions at a time only (`ropescale.train.loss.causal_lm_loss`).
    """
    with torch.no_grad():
        total, n = causal_lm_loss(model, input_ids, labels, chunk_size=chunk_size)
    return float(total), n


# ------------------------------------------------------------------------------------------ windows


def stream_of(token_docs: Sequence[Sequence[int]], eos_id: int) -> list[int]:
    """Documents joined into one token stream, EOS after each (as `ropescale.data.pack` joins them)."""
    return [t for doc in token_docs for t in (*doc, eos_id)]


def check_window(n_stream: int, length: int, bos_id: int | None, stride: int | None = None) -> int:
    """ValueError naming the length when a stream of `n_stream` tokens cannot fill one window of `length` (or the
    stride does not fit it); else the number of stream tokens per window."""
    if length < 2:
        raise ValueError(f"`lengths`: a perplexity window needs at least 2 tokens, got {length}")
    body = length - (bos_id is not None)
    if n_stream < body:
        raise ValueError(f"`lengths` {length}: the text has only {n_stream} tokens (EOS included), one window "
                         f"needs {body}; give more text with `data` or a shorter length")
    if stride is not None and not 1 <= stride <= length - 1:
        raise ValueError(f"`stride` must lie in [1, length - 1] = [1, {length - 1}] for length {length}, "
                         f"got {stride}")
    return body


def windows(stream: Sequence[int], length: int, bos_id: int | None, stride: int | None = None,
            max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [n, length], labels [n, length]) of the perplexity windows; see the module docstring.

    stride None: non-overlapping windows. stride S (1 ≤ S ≤ length − 1): a window every S stream tokens, each
    scoring its last S targets (the first window all of them). max_windows keeps the first windows only.
    Raises ValueError naming the length when the stream cannot fill one window.
    """
    body = check_window(len(stream), length, bos_id, stride)  # stream tokens per window
    step = body if stride is None else stride
    starts = range(0, len(stream) - body + 1, step)
    starts = starts[:max_windows] if max_windows is not None else starts
    data = torch.tensor(stream, dtype=torch.long)
    rows = torch.stack([data[s : s + body] for s in starts])  # [n, body]
    if bos_id is not None:
        rows = torch.cat([torch.full((len(rows), 1), bos_id, dtype=torch.long), rows], dim=1)  # [n, length]
    labels = shift_labels(rows)  # [n, length]; the last position has no target
    if stride is not None:
        # window k > 0 scores its last S targets (label positions length-1-S .. length-2): tokens the previous
        # window did not reach
        labels[1:, : length - 1 - stride] = IGNORE_INDEX
    return rows, labels


# ------------------------------------------------------------------------------------------ bytes

_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte ↔ printable-character map (the ByteLevel pre-tokenizer's alphabet), inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_LEVEL_ALPHABET = _bytes_to_unicode()


def _byte_level_length(tokenizer, token: str, token_id: int) -> int:
    if all(ch in _BYTE_LEVEL_ALPHABET for ch in token):
        return len(token)  # one character per byte
    return len(tokenizer.decode([token_id]).encode("utf-8"))  # an added token stored as plain text


def _metaspace_length(tokenizer, token: str, token_id: int) -> int:
    if _BYTE_FALLBACK.match(token):
        return 1  # SentencePiece byte fallback: one raw byte
    return len(token.replace("\u2581", " ").encode("utf-8"))


def _decoded_length(tokenizer, token: str, token_id: int) -> int:
    return len(tokenizer.decode([token_id]).encode("utf-8"))


# the tokenizer's decoder type -> bytes of one vocabulary entry; byte-level and SentencePiece vocabularies spell
# their bytes out, anything else falls back to decoding the token alone
BYTE_COUNTERS = {"ByteLevel": _byte_level_length, "Metaspace": _metaspace_length, "ByteFallback": _metaspace_length}


def _decoder_types(tokenizer) -> list[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return []
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return [p.get("type", "") for p in parts]


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """UTF-8 bytes each vocabulary id contributes to the text, LongTensor [len(tokenizer)]; special tokens 0.

    Byte-level BPE (GPT-2, Llama 3, the embedded tokenizer): one alphabet character per byte. SentencePiece
    (Llama 2, Mistral): "▁" is a space, <0xNN> one byte. Others: the UTF-8 length of the token decoded alone.
    For a lossless tokenizer the sum over a text's tokens equals the text's UTF-8 length.
    """
    types = _decoder_types(tokenizer)
    count = next((BYTE_COUNTERS[t] for t in types if t in BYTE_COUNTERS), _decoded_length)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    lengths = [0 if i in special or tok is None else count(tokenizer, tok, i) for i, tok in enumerate(vocab)]
    return torch.tensor(lengths, dtype=torch.long)


# ------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class Score:
    """Summed NLL (nats) over scored tokens, their count and their UTF-8 bytes."""

    nll_sum: float
    tokens: int
    bytes: int

    def measurements(self, windows: int) -> list[Measurement]:
        nll = self.nll_sum / self.tokens
        extra = {"tokens": self.tokens, "bytes": self.bytes, "windows": windows}
        bpb = self.nll_sum / math.log(2) / self.bytes if self.bytes else float("nan")
        return [Measurement("nll", nll, self.tokens, extra),
                Measurement("perplexity", math.exp(nll) if nll < 700 else float("inf"), self.tokens, extra),
                Measurement("bits_per_byte", bpb, self.tokens, extra)]


def score_windows(model, ids: torch.Tensor, labels: torch.Tensor, byte_lengths: torch.Tensor,
                  batch_size: int = 1, chunk_size: int | None = None) -> Score:
    """NLL, token and byte totals of windows [n, T] with labels [n, T], `batch_size` windows per forward."""
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for i in range(0, len(ids), batch_size):
        nll, n = window_nll(model, ids[i : i + batch_size].to(device), labels[i : i + batch_size].to(device),
                            chunk_size)
        total, tokens = total + nll, tokens + n
    scored = labels[labels != IGNORE_INDEX]
    return Score(total, tokens, int(byte_lengths[scored].sum()))


# ------------------------------------------------------------------------------------------ the task


def default_lengths(original_length: int) -> list[int]:
    """1×, 2×, 4×, 8×, 16× L0: the README table's grid."""
    return [original_length * k for k in (1, 2, 4, 8, 16)]


@dataclass
class PerplexityTask:
    """Perplexity at each length of `lengths` (default 1..16 × L0) on `data` (any `load_texts` source)."""

    lengths: list[int] | None = None
    data: str = "embedded"
    split: str = "eval"
    text_field: str = "text"
    stride: int | None = None
    max_windows: int | None = None
    max_tokens: int | None = None   # score the first max_tokens stream tokens only: the same text at every length
    batch_size: int = 1
    chunk_size: int | None = None

    name = "perplexity"
    metrics = ("nll", "perplexity", "bits_per_byte")

    def settings(self) -> dict:
        settings = {"data": self.data, "split": self.split, "text_field": self.text_field, "stride": self.stride,
                    "max_windows": self.max_windows}
        if self.max_tokens is not None:   # only when set, so rows written before the option keep their cell keys
            settings["max_tokens"] = self.max_tokens
        return settings

    def cells(self, subject: Subject) -> list[Cell]:
        return [Cell(n) for n in (self.lengths or default_lengths(subject.original_length))]

    def prepare(self, model, tokenizer, subject: Subject) -> None:
        from ropescale.data import load_texts, tokenize_documents

        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; perplexity windows join documents with EOS")
        docs = load_texts(self.data, text_field=self.text_field, split=self.split)
        self._stream = stream_of(tokenize_documents(tokenizer, docs), tokenizer.eos_token_id)
        self._bytes = token_byte_lengths(tokenizer)
        self._bos = tokenizer.bos_token_id
        if self.max_tokens is not None:
            # windows then tile the same text at every length (up to a ragged tail shorter than one window), so
            # that a change across lengths is the model's, not the text's
            self._stream = self._stream[: self.max_tokens]
            longest = max(c.length for c in self.cells(subject))
            if self.max_tokens < longest - (self._bos is not None):
                raise ValueError(f"`max_tokens` {self.max_tokens} is shorter than one window of length {longest}")
        for cell in self.cells(subject):  # fail before the first cell, not after hours of shorter ones
            check_window(len(self._stream), cell.length, self._bos, self.stride)

    def workload(self, cell: Cell) -> EvalShape:
        return EvalShape("window", cell.length, self.batch_size, self.chunk_size)

    def measure(self, model, tokenizer, cell: Cell) -> list[Measurement]:
        ids, labels = windows(self._stream, cell.length, self._bos, self.stride, self.max_windows)
        score = score_windows(model, ids, labels, self._bytes, self.batch_size, self.chunk_size)
        return score.measurements(len(ids))
