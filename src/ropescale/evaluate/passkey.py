"""Passkey retrieval over a grid of lengths × depths (Landmark Attention's prompt, as the YaRN paper runs it).

A cell (length L, depth d) holds `trials` prompts from `ropescale.data.passkey_prompt` (the same function that
builds the embedded model's pretraining documents), each with a different key drawn from a seed fixed per
(seed, L, d), the key line at depth d, and prompt + answer filling exactly L positions. Per trial:
- greedy decoding with the KV cache until a newline follows some text, EOS, or `ANSWER_SLACK` tokens more than the
  answer " KEY" has (so " The pass key is 12345" is read too); correct when the first run of digits in the whole
  output equals the key (exact match on the digits);
- the key's log-likelihood given the prompt, teacher-forced: bits per key digit = Σ NLL of the answer tokens
  that hold digits / ln 2 / number of digits. A model that knows nothing about the key pays log2(10) = 3.32
  bits per digit (uniform over digits); one that retrieves it pays close to 0.
Rows: accuracy (fraction correct, n = trials) and key_bits_per_digit (mean over trials) per cell.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ropescale.data.passkey import PasskeyPrompt, passkey_prompt, random_key
from ropescale.evaluate.decoding import answer_nll, batches, generate_until, prefill
from ropescale.evaluate.driver import Cell, Measurement, Subject
from ropescale.evaluate.perplexity import default_lengths
from ropescale.memory_plan import EvalShape

UNIFORM_BITS_PER_DIGIT = math.log2(10)
ANSWER_SLACK = 8  # tokens of generation beyond the answer's own: room for a leading space or word before the key


def depth_grid(n: int) -> list[float]:
    """n depths evenly spread over [0, 1] (one depth: the middle)."""
    if n < 1:
        raise ValueError(f"`n_depths` must be >= 1, got {n}")
    return [round(i / (n - 1), 6) for i in range(n)] if n > 1 else [0.5]


def check_depths(depths: list[float]) -> list[float]:
    bad = [d for d in depths if not 0.0 <= d <= 1.0]
    if bad or not depths:
        raise ValueError(f"`depths` must be numbers in [0, 1], got {depths}")
    return [float(d) for d in depths]


def check_grid(depths, trials: int) -> list[float]:
    """The depths of a retrieval task's grid as floats; ValueError naming the field for a bad depth or trial count."""
    depths = check_depths(list(depths))
    if trials < 1:
        raise ValueError(f"`trials` must be >= 1, got {trials}")
    return depths


def grid_cells(lengths: list[int] | None, depths: list[float], subject: Subject) -> list[Cell]:
    """Every (length, depth) cell; lengths default to 1..16 × L0."""
    return [Cell(n, d) for n in (lengths or default_lengths(subject.original_length)) for d in depths]


def cell_keys(seed: int, length: int, depth: float, n: int, digits: int) -> list[str]:
    """The keys of one cell: the same for every model and method, different across cells."""
    rng = random.Random(f"passkey:{seed}:{length}:{depth!r}")  # str seeds are stable across processes
    return [random_key(rng, digits) for _ in range(n)]


def cell_prompts(tokenizer, length: int, depth: float, keys: list[str], filler: str | None) -> list[PasskeyPrompt]:
    """Prompts whose prompt + answer fill exactly `length` positions."""
    prompts = []
    try:
        for key in keys:
            n_answer = len(passkey_prompt(tokenizer, length, depth, key, filler).answer_ids)
            prompts.append(passkey_prompt(tokenizer, length - n_answer, depth, key, filler))
    except ValueError as exc:
        raise ValueError(f"`lengths` {length}: {exc} (plus the answer)") from None
    return prompts


def first_digits(text: str) -> str:
    match = re.search(r"\d+", text)
    return match.group(0) if match else ""


def is_correct(decoded: str, key: str) -> bool:
    """Exact match on the digits: the first run of digits the model wrote is the key."""
    return first_digits(decoded) == key


def digit_mask(tokenizer, answer_ids: list[int]) -> list[bool]:
    """Which answer tokens hold digits (the leading space token of " 12345" does not); all of them when the
    tokenizer spells digits in tokens that do not decode alone."""
    mask = [any(ch.isdigit() for ch in tokenizer.decode([t])) for t in answer_ids]
    return mask if any(mask) else [True] * len(answer_ids)


class Scored(NamedTuple):
    """One trial: the decoded output, whether its first digits are the key, the key's bits per digit."""

    output: str
    correct: bool
    bits_per_digit: float


def score_prompts(model, tokenizer, prompts: list[PasskeyPrompt]) -> list[Scored]:
    """Each trial of a batch sharing one prompt length and one answer length, scored."""
    device = next(model.parameters()).device
    ids = torch.tensor([p.prompt_ids for p in prompts], device=device)  # [B, P]
    answers = torch.tensor([p.answer_ids for p in prompts], device=device)  # [B, K]
    state = prefill(model, ids)
    nll = answer_nll(model, state, answers)  # [B, K]
    outputs = generate_until(model, tokenizer, state, answers.shape[1] + ANSWER_SLACK)
    scored = []
    for row, p, out in zip(nll, prompts, outputs):
        mask = torch.tensor(digit_mask(tokenizer, p.answer_ids), device=row.device)
        scored.append(Scored(out, is_correct(out, p.key), float(row[mask].sum()) / math.log(2) / len(p.key)))
    return scored


def group_by_shape(prompts: list[PasskeyPrompt]) -> list[list[PasskeyPrompt]]:
    """Trials with equal prompt and answer lengths batch without padding (all of a cell, for most tokenizers)."""
    groups: dict[tuple[int, int], list[PasskeyPrompt]] = {}
    for p in prompts:
        groups.setdefault((len(p.prompt_ids), len(p.answer_ids)), []).append(p)
    return list(groups.values())


@dataclass
class RetrievalGrid:
    """The grid of a retrieval task (passkey, needle): lengths (default 1..16 × L0) × depths in [0, 1], `trials`
    prompts per cell drawn from `seed`."""

    lengths: list[int] | None = None
    depths: list[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.depths = check_grid(self.depths, self.trials)

    def cells(self, subject: Subject) -> list[Cell]:
        return grid_cells(self.lengths, self.depths, subject)


@dataclass
class PasskeyTask(RetrievalGrid):
    """Passkey accuracy and key bits per digit on lengths × depths, `trials` keys per cell."""

    digits: int = 5
    filler: str | None = None  # the filler text; None: the Landmark sentences
    filler_name: str = "landmark"  # how the filler is named in settings (e.g. its file path)
    batch_size: int = 8

    name = "passkey"
    metrics = ("accuracy", "key_bits_per_digit")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filler is not None and not self.filler.strip():
            raise ValueError(f"`filler` {self.filler_name!r} holds no text")

    def settings(self) -> dict:
        return {"trials": self.trials, "seed": self.seed, "digits": self.digits, "filler": self.filler_name}

    def prepare(self, model, tokenizer, subject: Subject) -> None:
        pass

    def workload(self, cell: Cell) -> EvalShape:
        # the answer's NLL is scored from a copy of the prefill's KV cache (decoding.answer_nll)
        return EvalShape("passkey", cell.length, min(self.batch_size, self.trials))

    def measure(self, model, tokenizer, cell: Cell) -> list[Measurement]:
        keys = cell_keys(self.seed, cell.length, cell.depth, self.trials, self.digits)
        prompts = cell_prompts(tokenizer, cell.length, cell.depth, keys, self.filler)
        scored, samples = [], []
        for group in group_by_shape(prompts):
            for batch in batches(group, self.batch_size):
                for p, t in zip(batch, score_prompts(model, tokenizer, batch)):
                    samples.append({"index": prompts.index(p), "depth": round(p.depth, 4),
                                    "prompt_tokens": len(p.prompt_ids), "expected": p.key, "output": t.output,
                                    "correct": t.correct, "key_bits_per_digit": round(t.bits_per_digit, 4),
                                    "prompt_ids": p.prompt_ids})
                    scored.append(t)
        n = len(prompts)
        samples = tuple(sorted(samples, key=lambda r: r["index"]))
        return [Measurement("accuracy", sum(t.correct for t in scored) / n, n, samples=samples),
                Measurement("key_bits_per_digit", sum(t.bits_per_digit for t in scored) / n, n,
                            {"uniform_bits_per_digit": UNIFORM_BITS_PER_DIGIT})]
