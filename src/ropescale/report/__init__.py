"""Plots and report.md from results files; never run during evaluation.

    from ropescale.report import write_report
    write_report(["results.jsonl"], "report/")   # -> perplexity.png, passkey.png, needle.png, ruler.png, scaling.png,
                                                 #    report.md
    write_report(["results.jsonl"], "report/", loss_curves={"yarn": "runs/yarn/loss.csv"})   # + loss.png
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ropescale.evaluate.ruler import THRESHOLD as RULER_THRESHOLD
from ropescale.evaluate.samples import SamplesFile, samples_path
from ropescale.io import write_text_atomic
from ropescale.report import markdown, plots
from ropescale.report.tables import EFFECTIVE_DEFINITION, effective_length, load_rows


def write_report(results: Sequence[str | Path], output: str | Path, *,
                 loss_curves: Mapping[str, str | Path] | None = None,
                 select: Callable | None = None, title: str | None = None,
                 preface: Sequence[str] = (), threshold: float = RULER_THRESHOLD) -> list[Path]:
    """Read the results files, write the figures present in them and report.md into `output`; returns the paths.

    loss_curves: label -> a fine-tuning run's loss.csv, drawn as loss.png. select(row) -> bool keeps only some
    rows (e.g. a study's current settings). title and preface (markdown lines) open report.md. threshold: the RULER
    average an effective length must keep. A samples file beside a results file (`results.samples.jsonl`) adds
    failing outputs next to their expected answers.
    Raises ValueError for a missing file, a corrupt line (named), or no rows.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`output` {str(output)!r} is a file; give a folder for the report")
    rows = load_rows(results)
    if select is not None:
        rows = [r for r in rows if select(r)]
        if not rows:
            raise ValueError(f"results file(s) {', '.join(map(str, results))} hold no rows of this report")
    figures = [plots.perplexity_figure(rows, out / "perplexity.png"),
               plots.heatmap_figure(rows, "passkey", out / "passkey.png"),
               plots.heatmap_figure(rows, "needle", out / "needle.png"),
               plots.ruler_figure(rows, out / "ruler.png"),
               plots.scaling_figure(rows, out / "scaling.png")]
    if loss_curves:
        figures.append(plots.loss_figure(loss_curves, out / "loss.png"))
    figures = [f for f in figures if f is not None]
    samples = [r for path in results if samples_path(path).exists() for r in SamplesFile(samples_path(path)).read()]
    if select is not None:
        keys = {(r.model, r.method, r.factor, r.task) for r in rows}
        samples = [r for r in samples if (r["model"], r["method"], r["factor"], r["task"]) in keys]
    text = markdown.render(rows, [str(r) for r in results], figures, title=title, preface=preface,
                           samples=samples, threshold=threshold)
    report = write_text_atomic(out / "report.md", text)
    return figures + [report]


__all__ = ["EFFECTIVE_DEFINITION", "effective_length", "load_rows", "write_report"]
