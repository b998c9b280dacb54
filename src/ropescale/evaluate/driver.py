"""The one evaluation driver: load once, skip finished cells, measure the rest, write each cell as it finishes.

Every task (perplexity, passkey, needle, short-context, ruler) is a small object that lists its cells and measures
one cell; the loop, the resume logic, the progress bar and the writing (rows, and per-sample records when asked)
live here only.

A task provides:
    name: str                      the Result.task it writes
    metrics: tuple[str, ...]       the metrics each cell writes (a cell is done when all are in the file)
    settings() -> dict             what fixes its numbers besides model/rope/length/depth (data, trials, seed...)
    cells(subject) -> list[Cell]   the grid (may depend on L0, e.g. default lengths)
    prepare(model, tokenizer, subject)  once, only when some cell remains; sees the model *before* the spec is
                                   applied (short-context measures its baseline there)
    measure(model, tokenizer, cell) -> list[Measurement]
    workload(cell) -> EvalShape    optional: the shape of the cell's largest unit of work, which `evaluate` checks
                                   against the device's memory before it loads the model (`ropescale.memory_plan`)
    summarize(rows) -> [(Cell, [Measurement])]   optional: rows derived from the task's finished rows (RULER's
                                   per-length average), written once their inputs are all in the file
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ropescale import models
from ropescale.evaluate.results import Result, ResultsFile, cell_key, latest
from ropescale.evaluate.samples import SamplesFile, settings_key
from ropescale.memory_plan import check_fits, estimate, eval_knobs
from ropescale.model_info import ModelInfo
from ropescale.patch import apply


@dataclass(frozen=True)
class Cell:
    """One point of a task's grid: a length in tokens, a depth in [0, 1] for retrieval tasks, and for tasks whose
    cells each measure one of their metrics (RULER: one synthetic task per cell) that metric."""

    length: int
    depth: float | None = None
    metric: str | None = None

    def metrics(self, task) -> set[str]:
        """What the cell writes: its own metric, or every metric of its task."""
        return {self.metric} if self.metric is not None else set(task.metrics)


@dataclass(frozen=True)
class Measurement:
    """One metric of one cell, before the driver adds who and what was measured. samples: one dict per prompt
    for the samples file (expected answer, output, correct...; `prompt_ids` is decoded into `prompt` only when
    prompts are logged, and dropped otherwise)."""

    metric: str
    value: float
    n: int
    extra: dict = field(default_factory=dict)
    samples: tuple = ()


@dataclass(frozen=True)
class Subject:
    """What is evaluated: the label written in rows, the rope it runs with, and the model's geometry.

    spec: the spec applied on the fly (None: the model runs as saved). rope: the rope actually evaluated (the
    spec, or the one read from the saved config), recorded in every row's settings so that a different
    beta_fast or θ is a different cell, and so the report can draw its frequencies.
    """

    label: str
    spec: Any  # RopeSpec | None
    rope: Any  # RopeSpec
    original_length: int  # L0 of the model as given
    head_dim: int
    model_name: str | None = None
    dtype: str = "float32"  # weights dtype; part of the cell key (bf16 numbers differ from fp32)

    @property
    def method(self) -> str:
        return self.rope.method

    @property
    def factor(self) -> float:
        return float(self.rope.factor)


class Task(Protocol):
    name: str
    metrics: tuple[str, ...]

    def settings(self) -> dict: ...

    def cells(self, subject: Subject) -> list[Cell]: ...

    def prepare(self, model, tokenizer, subject: Subject) -> None: ...

    def measure(self, model, tokenizer, cell: Cell) -> list[Measurement]: ...


def make_subject(config, spec=None, label: str = "embedded", model_name: str | None = None,
                 dtype: str = "float32") -> Subject:
    """Who is measured: L0 and head_dim from the config as given, the rope from the spec or the config."""
    info = ModelInfo.from_config(config)
    return Subject(label=label, spec=spec, rope=spec if spec is not None else info.rope,
                   original_length=info.original_max_position_embeddings, head_dim=info.head_dim,
                   model_name=model_name, dtype=dtype)


def _row_key(task: Task, subject: Subject, cell: Cell, settings: dict) -> tuple:
    return cell_key(subject.label, subject.method, subject.factor, task.name, cell.length, cell.depth, settings)


def remaining_cells(task: Task, subject: Subject, output: ResultsFile) -> list[Cell]:
    """The cells of the task's grid that `output` does not yet hold completely, in grid order."""
    done = output.completed()
    settings = row_settings(task, subject)
    return [c for c in task.cells(subject)
            if not c.metrics(task) <= done.get(_row_key(task, subject, c, settings), set())]


def row_settings(task: Task, subject: Subject) -> dict:
    return {**task.settings(), "rope": subject.rope.record(), "dtype": subject.dtype}


def evaluate(task: Task, model: Any = None, *, output: str | Path | ResultsFile, spec=None,
             label: str | None = None, tokenizer=None, device: str | None = None, dtype=None,
             progress: bool = True, on_cell: Callable[[Cell, list[Result]], None] | None = None,
             samples: str | Path | None = None, log_prompts: bool = False, force: bool = False) -> list[Result]:
    """Run `task` on a model and append its rows to `output`; returns the rows written by this call.

    model: a name (None/"embedded", a directory, a Hub id, a .gguf file) or a loaded transformers model (then
    `tokenizer` is required, and the model is patched in place when `spec` is given). spec: a RopeSpec applied
    with `ropescale.apply` after loading, the same code path as a saved checkpoint. Cells already complete in
    `output` are skipped; when none remains the weights are not even loaded. on_cell(cell, rows) is called
    after each cell is written. samples: a samples file (`samples.samples_path(output)` is the usual one) that
    receives each prompt's output of generative tasks; log_prompts adds the prompt text to it.

    Before a model is loaded by name, the largest remaining cell's memory is estimated for `device` and `dtype`
    (`check_memory`): ValueError when it cannot fit, one warning line when it fits narrowly; `force` skips that.
    ValueError for a `device` this machine does not have (`models.resolve_device`), before anything is read.
    """
    if device is not None:
        device = models.resolve_device(device)
    output = output if isinstance(output, ResultsFile) else ResultsFile(output)
    loaded = model is not None and not isinstance(model, (str, Path))
    if loaded and tokenizer is None:
        raise TypeError("evaluate(model=<loaded model>) needs tokenizer=")
    name = None if loaded else (None if model is None else str(model))
    config = model.config if loaded else models.load_config(name)
    if label is None:
        label = type(model).__name__ if loaded else (name or "embedded")
    weights = next(model.parameters()).dtype if loaded else (dtype or torch.float32)
    subject = make_subject(config, spec, label=label, model_name=name, dtype=str(weights).removeprefix("torch."))

    todo = remaining_cells(task, subject, output)
    written: list[Result] = []
    if todo:
        if not loaded:
            check_memory(task, todo, config, device, dtype, force)
            tokenizer = models.load_tokenizer(name)
            model = models.load_model(name, dtype=dtype, device=device)
        model.eval()
        with torch.no_grad():
            task.prepare(model, tokenizer, subject)
        if spec is not None:
            apply(model, spec)
        log = None if samples is None else SamplesFile(samples, log_prompts)
        written = _measure_cells(task, model, tokenizer, subject, todo, output, log, progress, on_cell)
    return written + _summarize(task, subject, output)


def largest_unit(task: Task, cells: Sequence[Cell], config, device: str | None = None, dtype=None):
    """(estimate, cell, shape) of the cell whose unit of work needs the most memory; None for a task without
    `workload`."""
    if not hasattr(task, "workload") or not cells:
        return None
    size = torch.finfo(dtype).bits // 8 if dtype is not None else 4
    units = [(estimate(config, task.workload(c), device or "cpu", size), c, task.workload(c)) for c in cells]
    return max(units, key=lambda unit: unit[0].total)


def check_memory(task: Task, cells: Sequence[Cell], config, device: str | None = None, dtype=None,
                 force: bool = False) -> None:
    """ValueError naming the estimate, the memory available and the knobs when the largest cell cannot fit on
    `device` (default cpu) with weights of `dtype`; one warning line when it fits narrowly (`memory_plan.check_fits`)."""
    largest = largest_unit(task, cells, config, device, dtype)
    if largest is None or force:
        return
    est, cell, shape = largest
    check_fits(est, device or "cpu", f"{task.name} at {cell.length} tokens (batch {shape.batch_size})",
               eval_knobs(shape))


def _rows(task: Task, subject: Subject, cell: Cell, measured: list[Measurement], extra: dict) -> list[Result]:
    settings = row_settings(task, subject)
    context = {"original_length": subject.original_length, "head_dim": subject.head_dim, **extra}
    return [Result(model=subject.label, method=subject.method, factor=subject.factor, task=task.name,
                   length=cell.length, depth=cell.depth, metric=m.metric, value=float(m.value), n=int(m.n),
                   settings=settings, extra={**context, **m.extra})
            for m in measured]


def _measure_cells(task: Task, model, tokenizer, subject: Subject, cells: Sequence[Cell], output: ResultsFile,
                   log: SamplesFile | None, progress: bool, on_cell) -> list[Result]:
    key = settings_key(row_settings(task, subject))
    written: list[Result] = []
    bar = tqdm(cells, desc=f"{task.name} {subject.label} {subject.method}×{subject.factor:g}", unit="cell",
               disable=not progress)
    for cell in bar:
        bar.set_postfix(length=cell.length, **({} if cell.depth is None else {"depth": cell.depth}),
                        **({} if cell.metric is None else {"metric": cell.metric}))
        start = time.perf_counter()
        with torch.no_grad():
            measured = task.measure(model, tokenizer, cell)
        rows = _rows(task, subject, cell, measured, {"seconds": round(time.perf_counter() - start, 3)})
        if log is not None:  # before the rows: a kill between the two makes the rerun measure the cell again
            head = {"model": subject.label, "method": subject.method, "factor": subject.factor, "task": task.name,
                    "length": cell.length, "depth": cell.depth, "settings": key}
            log.append(head, measured, tokenizer)
        output.append(rows)
        written += rows
        if on_cell is not None:
            on_cell(cell, rows)
    return written


def _summarize(task: Task, subject: Subject, output: ResultsFile) -> list[Result]:
    """Rows the task derives from its finished rows (e.g. RULER's per-length average) that are not in the file."""
    if not hasattr(task, "summarize") or not output.path.exists():
        return []
    settings = row_settings(task, subject)
    mine = [r for r in latest(output.read())
            if r.cell_key() == _row_key(task, subject, Cell(r.length, r.depth), settings)]
    done = {(r.length, r.depth, r.metric) for r in mine}
    written: list[Result] = []
    for cell, measured in task.summarize(mine):
        fresh = [m for m in measured if (cell.length, cell.depth, m.metric) not in done]
        if fresh:
            rows = _rows(task, subject, cell, fresh, {})
            output.append(rows)
            written += rows
    return written
