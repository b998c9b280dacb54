"""Needle in a haystack over lengths × depths, scored locally (no LLM judge).

Following gkamradt/LLMTest_NeedleInAHaystack: a needle sentence is inserted into real text at a document depth,
snapped back to the nearest sentence end, and the model is asked about it. Here the haystack is the held-out
plays of the embedded corpus (or `--haystack FILE`), cut in tokens so that prompt + answer budget fill exactly
the cell's length, and the question ends with the start of the answer ("... The secret ingredient of the duke's
cake is") so a base model can complete it.

Each of `trials` prompts of a cell starts the haystack at a different sentence (offsets drawn from the seed and
the length, shared by all depths of that length); prompt + len(answer) + 2 tokens fill the cell's length. The model
decodes greedily (KV cache) until a newline follows some text, EOS, or ANSWER_SLACK tokens beyond that budget;
the prediction is that text up to its first sentence end or newline. Scores, with SQuAD's normalisation
(lowercase, no punctuation, no articles):
- accuracy: the normalised answer span occurs, as whole words, in the normalised prediction (RULER's
  string match);
- f1: token-overlap F1 between prediction and answer (SQuAD).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass

import torch

from ropescale.evaluate.decoding import batches, generate_until, prefill
from ropescale.evaluate.driver import Cell, Measurement, Subject
from ropescale.memory_plan import EvalShape
from ropescale.evaluate.passkey import ANSWER_SLACK, RetrievalGrid

NEEDLE = "The secret ingredient of the duke's cake is a spoonful of honey."
QUESTION = "What is the secret ingredient of the duke's cake? The secret ingredient of the duke's cake is"
ANSWER = "a spoonful of honey"
_SENTENCE_END = (".", "!", "?")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def prediction_span(decoded: str) -> str:
    """The model's answer: its text up to the first sentence end or newline."""
    first_line = decoded.strip().split("\n", 1)[0]
    return re.split(r"(?<=[.!?])\s", first_line, maxsplit=1)[0]


def exact_match(prediction: str, answer: str) -> bool:
    """The normalised answer occurs as whole words in the normalised prediction."""
    return f" {normalize(answer)} " in f" {normalize(prediction)} "


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD token-overlap F1 of the normalised prediction against the normalised answer."""
    pred, gold = normalize(prediction).split(), normalize(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def sentence_starts(tokenizer, haystack_ids: list[int]) -> list[int]:
    """Token indices where a sentence begins: 0 and every index right after a token ending in . ! or ?."""
    ends = {}
    starts = [0]
    for i, t in enumerate(haystack_ids):
        if t not in ends:
            ends[t] = tokenizer.decode([t]).rstrip().endswith(_SENTENCE_END)
        if ends[t]:
            starts.append(i + 1)
    return starts


def insertion_point(starts_in_window: list[int], n_hay: int, depth: float) -> int:
    """The sentence start at or before depth·n_hay (snapped back, as gkamradt does), so the needle always
    follows a complete sentence; depth 1 is the last sentence end of the haystack."""
    target = round(depth * n_hay)
    return max(s for s in starts_in_window if s <= target)


@dataclass
class NeedleTask(RetrievalGrid):
    """Needle accuracy and F1 on lengths × depths, `trials` haystack offsets per cell."""

    trials: int = 5
    haystack: str | None = None  # haystack text; None: the held-out plays
    haystack_name: str = "embedded:eval"
    needle: str = NEEDLE
    question: str = QUESTION
    answer: str = ANSWER
    batch_size: int = 8

    name = "needle"
    metrics = ("accuracy", "f1")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.answer.strip() or normalize(self.answer) not in normalize(self.needle):
            raise ValueError(f"`answer` {self.answer!r} must occur in `needle` {self.needle!r}")
        if not self.question.strip():
            raise ValueError("`question` must not be empty")

    def settings(self) -> dict:
        return {"trials": self.trials, "seed": self.seed, "haystack": self.haystack_name, "needle": self.needle,
                "question": self.question, "answer": self.answer}

    def prepare(self, model, tokenizer, subject: Subject) -> None:
        from ropescale.data import load_texts

        text = self.haystack
        if text is None:
            text = "\n\n".join(doc.text for doc in load_texts("embedded", split="eval"))
        encode = lambda s: list(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
        self._hay = encode(text)
        self._starts = sentence_starts(tokenizer, self._hay)
        self._prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self._needle = encode(" " + self.needle.strip())
        self._question = encode("\n\n" + self.question.strip())
        self._n_new = len(encode(" " + self.answer.strip())) + 2

    def workload(self, cell: Cell) -> EvalShape:
        return EvalShape("prefill", cell.length, min(self.batch_size, self.trials))

    def _offsets(self, length: int, n_hay: int) -> list[int]:
        fits = [s for s in self._starts if s + n_hay <= len(self._hay)]
        if not fits:
            raise ValueError(f"`lengths` {length}: the haystack has {len(self._hay)} tokens, a prompt of this "
                             f"length needs {n_hay}; give a longer `haystack` or a shorter length")
        rng = random.Random(f"needle:{self.seed}:{length}")
        return [rng.choice(fits) for _ in range(self.trials)]

    def _hay_budget(self, length: int) -> int:
        """Haystack tokens in a prompt of `length` positions (answer budget included)."""
        n_hay = length - self._n_new - len(self._prefix) - len(self._needle) - len(self._question)
        if n_hay < 1:
            raise ValueError(f"`lengths` {length} is too short for the needle prompt (needle, question and "
                             f"answer take {length - n_hay} tokens)")
        return n_hay

    def prompt(self, length: int, depth: float, offset: int) -> tuple[list[int], float]:
        """Prompt ids (length − answer budget tokens) and the depth actually realised."""
        n_hay = self._hay_budget(length)
        hay = self._hay[offset : offset + n_hay]
        starts = [s - offset for s in self._starts if offset <= s <= offset + n_hay]
        cut = insertion_point(starts, n_hay, depth)
        return self._prefix + hay[:cut] + self._needle + hay[cut:] + self._question, cut / n_hay

    def measure(self, model, tokenizer, cell: Cell) -> list[Measurement]:
        offsets = self._offsets(cell.length, self._hay_budget(cell.length))
        built = [self.prompt(cell.length, cell.depth, o) for o in offsets]
        device = next(model.parameters()).device
        hits, f1s, samples = [], [], []
        for batch in batches([ids for ids, _ in built], self.batch_size):
            outputs = generate_until(model, tokenizer, prefill(model, torch.tensor(batch, device=device)),
                                     self._n_new + ANSWER_SLACK)
            for ids, out in zip(batch, outputs):
                span = prediction_span(out)
                hits.append(exact_match(span, self.answer))
                f1s.append(token_f1(span, self.answer))
                samples.append({"index": len(samples), "depth": round(built[len(samples)][1], 4),
                                "prompt_tokens": len(ids), "expected": self.answer, "output": out,
                                "correct": hits[-1], "f1": round(f1s[-1], 4), "prompt_ids": ids})
        n = len(built)
        extra = {"realised_depth": sum(d for _, d in built) / n}
        return [Measurement("accuracy", sum(hits) / n, n, extra, samples=tuple(samples)),
                Measurement("f1", sum(f1s) / n, n, extra)]
