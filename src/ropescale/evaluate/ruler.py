"""RULER over a grid of lengths × tasks: the field's effective-length measure (Hsieh et al. 2024).

A cell is one synthetic task at one length: `samples` prompts from `ropescale.data.ruler` (asked needles spread
over depths 0..1), greedy decoding with the KV cache until a newline follows some text, EOS, or the task's
RULER budget (30-128 tokens), scored by RULER's string match over the whole output. Each cell writes one row,
`metric` = the task's name, value in [0, 1], n = samples; once every task of a length is in, the length's
`average` row follows (the mean over the tasks measured there). A task that needs more tokens than a length holds
writes its row with n = 0 and the reason in `extra.skipped`; averages leave it out and name it.

Effective length (RULER, drawn by the report): the longest length whose average is at least THRESHOLD (0.856,
Llama-2-7B's score at 4K) with every shorter evaluated length at least that too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ropescale.data import fillers, ruler
from ropescale.data.qa import read_qa
from ropescale.evaluate.decoding import batches, generate_until, prefill
from ropescale.evaluate.driver import Cell, Measurement, Subject
from ropescale.evaluate.perplexity import default_lengths
from ropescale.memory_plan import EvalShape

THRESHOLD = 0.856  # RULER: Llama-2-7B's average at 4K
AVERAGE = "average"
CHAT_TEMPLATE_MODES = ("auto", "none")


@dataclass
class RulerTask:
    """RULER scores per task and length, and each length's average over its tasks."""

    lengths: list[int] | None = None
    tasks: list[str] = field(default_factory=lambda: list(ruler.TASKS))
    samples: int = 10
    seed: int = 0
    haystack: str | None = None  # essay haystack text; None: the bundled essays (fillers.essay_sentences)
    haystack_name: str = "essays"  # how the haystack is named in settings (e.g. its file path)
    chat_template: str = "auto"  # auto: the tokenizer's chat template when it has one; none: plain text
    batch_size: int = 4
    qa_files: list[str] = field(default_factory=list)  # SQuAD (qa_1) / HotpotQA (qa_2) JSON files; without one,
    #                                                    its QA task is skipped (rows with n = 0)

    name = "ruler"

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        unknown = [t for t in self.tasks if t not in ruler.TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"`tasks` must be RULER task names ({', '.join(ruler.TASKS)}), got {self.tasks}")
        self.qa_files = [str(f) for f in self.qa_files]
        self._qa = tuple(read_qa(f) for f in self.qa_files)
        datasets = [q.dataset for q in self._qa]
        twice = next((d for d in datasets if datasets.count(d) > 1), None)
        if twice:
            raise ValueError(f"`qa_files` holds two {twice} files; give at most one SQuAD and one HotpotQA file")
        if self.samples < 1:
            raise ValueError(f"`samples` must be >= 1, got {self.samples}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(f"`chat_template` must be auto or none, got {self.chat_template!r}")
        self._essay = fillers.essay_sentences() if self.haystack is None else tuple(fillers.sentences(self.haystack))
        if not self._essay:
            raise ValueError(f"`haystack` {self.haystack_name!r} holds no text")
        self.metrics = tuple(self.tasks)  # per cell: one task; each length's average follows (`summarize`)

    def settings(self) -> dict:
        qa = {"qa_files": {q.dataset: q.source for q in self._qa}} if self._qa else {}
        return {"samples": self.samples, "seed": self.seed, "haystack": self.haystack_name,
                "chat_template": self.chat_template, "tasks": list(self.tasks), **qa}

    def without_file(self) -> list[str]:
        """The QA tasks asked for whose file was not given: each is skipped (a row with n = 0 per length)."""
        given = {q.dataset for q in self._qa}
        return [t for t in self.tasks if ruler.TASKS[t].kind == "qa" and ruler.TASKS[t].dataset not in given]

    def cells(self, subject: Subject) -> list[Cell]:
        lengths = self.lengths or default_lengths(subject.original_length)
        return [Cell(n, metric=m) for n in lengths for m in self.tasks]

    def prepare(self, model, tokenizer, subject: Subject) -> None:
        self._chat = self.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))

    def workload(self, cell: Cell) -> EvalShape:
        return EvalShape("prefill", cell.length, min(self.batch_size, self.samples))

    def build(self, tokenizer, task: str, length: int) -> list[ruler.RulerSample]:
        hay = ruler.Haystacks(essay=self._essay, keys="eval", qa=self._qa)
        return [ruler.ruler_sample(tokenizer, task, length, i, self.samples, self.seed, hay, self._chat)
                for i in range(self.samples)]

    def measure(self, model, tokenizer, cell: Cell) -> list[Measurement]:
        try:
            built = self.build(tokenizer, cell.metric, cell.length)
        except ValueError as exc:
            return [Measurement(cell.metric, 0.0, 0, {"skipped": str(exc)})]
        budget = ruler.TASKS[cell.metric].max_new_tokens
        scores, samples = [], []
        device = next(model.parameters()).device
        for group in batches(list(enumerate(built)), self.batch_size):
            by_len: dict[int, list] = {}
            for i, s in group:  # prompts of equal length batch without padding
                by_len.setdefault(len(s.prompt_ids), []).append((i, s))
            for same in by_len.values():
                ids = torch.tensor([s.prompt_ids for _, s in same], device=device)
                outputs = generate_until(model, tokenizer, prefill(model, ids), budget)
                for (i, s), out in zip(same, outputs):
                    value = ruler.score(cell.metric, out, s.outputs)
                    scores.append(value)
                    samples.append({"index": i, "depth": round(s.depth, 4), "prompt_tokens": len(s.prompt_ids),
                                    "expected": s.outputs, "output": out, "score": value,
                                    "correct": value == 1.0, "prompt_ids": s.prompt_ids})
        samples.sort(key=lambda r: r["index"])
        return [Measurement(cell.metric, sum(scores) / len(scores), len(scores), samples=tuple(samples))]

    def summarize(self, rows: list) -> list[tuple[Cell, list[Measurement]]]:
        """The `average` of each length whose task rows are all in `rows` (rows of this task and settings)."""
        by_length: dict[int, dict[str, object]] = {}
        for r in rows:
            by_length.setdefault(r.length, {})[r.metric] = r
        out = []
        for length, found in sorted(by_length.items()):
            if AVERAGE in found or not all(t in found for t in self.tasks):
                continue
            measured = [t for t in self.tasks if found[t].n > 0]
            skipped = [t for t in self.tasks if found[t].n == 0]
            if not measured:
                continue
            value = sum(found[t].value for t in measured) / len(measured)
            out.append((Cell(length, metric=AVERAGE),
                        [Measurement(AVERAGE, value, len(measured), {"tasks": measured, "skipped": skipped})]))
        return out
