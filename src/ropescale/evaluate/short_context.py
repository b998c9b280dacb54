"""Short-context regression: does the extended model still do as well at its original length L0?

Perplexity at L0 (the config's original length) of the model as evaluated against a baseline on the same
windows: the model *without* the spec (measured before the driver applies it) or `baseline_model` (e.g. the base
model of a fine-tuned checkpoint; it must share the tokenizer, since perplexities per token of different
vocabularies do not compare). The YaRN paper checks the same thing with the Open LLM suite (its Table 3);
perplexity at L0 is the cheap, model-agnostic version.

Rows at length L0: perplexity, baseline_perplexity and relative_change = perplexity / baseline − 1
(+0.02 means 2 % worse).
"""

from __future__ import annotations

from dataclasses import dataclass

from ropescale.evaluate.driver import Cell, Measurement, Subject
from ropescale.evaluate.perplexity import PerplexityTask
from ropescale.memory_plan import EvalShape


def _perplexity(measurements: list[Measurement]) -> Measurement:
    return next(m for m in measurements if m.metric == "perplexity")


@dataclass
class ShortContextTask:
    baseline_model: str | None = None
    data: str = "embedded"
    split: str = "eval"
    text_field: str = "text"
    max_windows: int | None = None
    batch_size: int = 1
    chunk_size: int | None = None

    name = "short-context"
    metrics = ("perplexity", "baseline_perplexity", "relative_change")

    def settings(self) -> dict:
        return {"data": self.data, "split": self.split, "text_field": self.text_field,
                "max_windows": self.max_windows, "baseline": self.baseline_model or "unscaled"}

    def cells(self, subject: Subject) -> list[Cell]:
        return [Cell(subject.original_length)]

    def workload(self, cell: Cell) -> EvalShape:
        # a baseline_model is loaded beside the evaluated one to measure its windows
        return EvalShape("window", cell.length, self.batch_size, self.chunk_size,
                         models=1 if self.baseline_model is None else 2)

    def prepare(self, model, tokenizer, subject: Subject) -> None:
        if self.baseline_model is None and subject.spec is None:
            raise ValueError("short-context compares against a baseline: give a spec (`method`, `factor`: the model "
                             "without it is the baseline) or `baseline_model`")
        self._inner = PerplexityTask([subject.original_length], self.data, self.split, self.text_field,
                                     max_windows=self.max_windows, batch_size=self.batch_size,
                                     chunk_size=self.chunk_size)
        self._inner.prepare(model, tokenizer, subject)
        cell = Cell(subject.original_length)
        if self.baseline_model is None:
            self._baseline = self._inner.measure(model, tokenizer, cell)  # before the spec is applied
            return
        from ropescale.models import load_model, load_tokenizer

        if load_tokenizer(self.baseline_model).get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"`baseline_model` {self.baseline_model!r} has a different tokenizer; perplexities "
                             "per token compare only with the same vocabulary")
        parameter = next(model.parameters())
        baseline = load_model(self.baseline_model, dtype=parameter.dtype, device=parameter.device)
        self._baseline = self._inner.measure(baseline, tokenizer, cell)
        del baseline

    def measure(self, model, tokenizer, cell: Cell) -> list[Measurement]:
        now = self._inner.measure(model, tokenizer, cell)
        ppl, base = _perplexity(now), _perplexity(self._baseline)
        extra = {f"{m.metric}": m.value for m in now if m.metric != "perplexity"}
        extra |= {f"baseline_{m.metric}": m.value for m in self._baseline if m.metric != "perplexity"}
        return [Measurement("perplexity", ppl.value, ppl.n, extra),
                Measurement("baseline_perplexity", base.value, base.n, extra),
                Measurement("relative_change", ppl.value / base.value - 1.0, ppl.n, extra)]
