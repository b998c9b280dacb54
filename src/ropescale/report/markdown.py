"""report.md: tables of every task from the results rows, and the effective passkey length per series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ropescale.evaluate.passkey import UNIFORM_BITS_PER_DIGIT
from ropescale.data.ruler import TASKS as RULER_TASKS
from ropescale.evaluate.ruler import THRESHOLD as RULER_THRESHOLD
from ropescale.evaluate.samples import failing as failing_samples
from ropescale.report import tables


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _length_table(rows, task: str, metric: str, digits: int, l0s: list[int], extra=None) -> list[str]:
    data = tables.by_length(rows, task, metric)
    if not data:
        return []
    series = {k: s for k, s in tables.series_of(r for r in rows if r.task == task).items() if k in data}
    lengths = sorted({n for values in data.values() for n in values})
    header = ["method"] + [f"{n} (L0)" if n in l0s else str(n) for n in lengths] + ([extra[0]] if extra else [])
    body = [[s.label] + [_fmt(data[k].get(n), digits) for n in lengths] + ([extra[1](k)] if extra else [])
            for k, s in series.items()]
    return _table(header, body)


def render(rows, sources: Sequence[str], figures: Sequence[Path], *, title: str | None = None,
           preface: Sequence[str] = (), samples: Sequence[dict] = (), threshold: float = RULER_THRESHOLD) -> str:
    """report.md: `title`, then `preface` (markdown lines, e.g. a study's headline table), then every task's
    tables, failing samples (from `samples`, the records of samples files) and the figures."""
    l0s = tables.original_lengths(rows)
    lines = [f"# {title or 'ropescale evaluation report'}", "", *preface, *([""] if preface else []),
             f"From {len(rows)} result rows in {', '.join(f'`{s}`' for s in sources)}. "
             f"L0 (the model's original context length): {', '.join(map(str, l0s)) or 'unknown'}.", ""]

    ppl = _length_table(rows, "perplexity", "perplexity", 3, l0s)
    if ppl:
        lines += ["## Perplexity against length", "",
                  "Mean next-token NLL over windows of the held-out text, as perplexity (lower is better):", ""]
        lines += ppl + ["", "Bits per byte (NLL / ln 2 / UTF-8 bytes of the scored text; tokenizer-free):", ""]
        lines += _length_table(rows, "perplexity", "bits_per_byte", 3, l0s) + [""]

    accuracy = tables.by_length(rows, "passkey", "accuracy")
    if accuracy:
        lines += ["## Passkey retrieval", "",
                  "Accuracy per length, averaged over depths (greedy decoding, exact match on the digits):", ""]
        lines += _length_table(rows, "passkey", "accuracy", 2, l0s,
                               extra=("effective length", lambda k: tables.effective_cell(accuracy[k])))
        lines += ["", f"The {tables.EFFECTIVE_DEFINITION}.", "",
                  "Key bits per digit (teacher-forced NLL of the key's digit tokens / ln 2 / digits), averaged over "
                  f"depths; a model that ignores the key pays the uniform log2(10) = {UNIFORM_BITS_PER_DIGIT:.2f}:",
                  ""]
        lines += _length_table(rows, "passkey", "key_bits_per_digit", 2, l0s) + [""]

    if tables.by_length(rows, "needle", "accuracy"):
        lines += ["## Needle in a haystack", "",
                  "Accuracy per length, averaged over depths (the answer span in the greedy answer):", ""]
        lines += _length_table(rows, "needle", "accuracy", 2, l0s)
        lines += ["", "Token-overlap F1 (SQuAD normalisation):", ""]
        lines += _length_table(rows, "needle", "f1", 2, l0s) + [""]

    lines += _ruler_section(rows, l0s, threshold)

    short = [r for r in rows if r.task == "short-context"]
    if short:
        lines += ["## Short-context regression", "",
                  "Perplexity at L0 against the baseline (the model without the scaling, or --baseline-model):", ""]
        by_series: dict[tuple, dict[str, float]] = {}
        lengths: dict[tuple, int] = {}
        for r in short:
            by_series.setdefault(tables.series_key(r), {})[r.metric] = r.value
            lengths[tables.series_key(r)] = r.length
        series = tables.series_of(short)
        body = [[s.label, str(lengths[k]), _fmt(by_series[k].get("perplexity")),
                 _fmt(by_series[k].get("baseline_perplexity")),
                 f"{100 * by_series[k]['relative_change']:+.2f} %" if "relative_change" in by_series[k] else "–"]
                for k, s in series.items()]
        lines += _table(["method", "L0", "perplexity", "baseline", "change"], body) + [""]

    lines += _failing_section(samples)
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    return "\n".join(lines)


def _ruler_section(rows, l0s: list[int], threshold: float) -> list[str]:
    averages = tables.by_length(rows, "ruler", "average")
    if not averages:
        return []
    lines = ["## RULER", "",
             "Average score per length over the RULER tasks that fit it (string match of the greedy output):", ""]
    lines += _length_table(rows, "ruler", "average", 2, l0s,
                           extra=("effective length", lambda k: tables.effective_cell(averages[k], threshold)))
    lines += ["", f"Effective length (RULER): the longest length whose average is at least {threshold:g} "
                  "(Llama-2-7B's score at 4K) with every shorter evaluated length at least that too.", ""]
    cells = tables.ruler_grid(rows)
    for key, series in tables.series_of(r for r in rows if r.task == "ruler").items():
        values = cells.get(key, {})
        lengths = sorted({n for n, _ in values})
        names = [m for m in RULER_TASKS if any(name == m for _, name in values)]
        body = [[m] + [_fmt(values.get((n, m)), 2) for n in lengths] for m in names]
        lines += [f"{series.label}, per task (– : the task does not fit that length):", ""]
        lines += _table(["task"] + [str(n) for n in lengths], body) + [""]
    return lines


def _failing_section(samples: Sequence[dict]) -> list[str]:
    failing = failing_samples(samples)
    if not failing:
        return []
    lines = ["## What the model said where it failed", "",
             "Up to two failing samples per cell, from the samples file (`--log-samples`):", ""]
    body = []
    for (model, method, factor, task, metric, length), records in sorted(failing.items(), key=str):
        what = task if metric in ("accuracy", None) else f"{task} {metric}"
        for r in records:
            expected = ", ".join(r["expected"]) if isinstance(r["expected"], list) else str(r["expected"])
            body.append([f"{model} {method}×{factor:g}", what, str(length), _cell_text(expected),
                         _cell_text(r["output"])])
    return lines + _table(["model", "task", "length", "expected", "output"], body) + [""]


def _cell_text(text: str, limit: int = 80) -> str:
    """One table cell: newlines shown as ⏎, pipes escaped, cut at `limit` characters."""
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return "`" + (text if len(text) <= limit else text[:limit] + "…") + "`"
