"""`run_study(config)`: the whole comparison — training-free methods, equal-budget fine-tuning, evaluation at
every length, and a report — resumable at every step.

Stages (each prints one line, then shows its own progress bars):

1. baseline: the model as saved (`default`, no scaling): perplexity and passkey at every length;
2. training-free: every method of `config.methods` at `config.factor`, same grid;
3. fine-tune: every run of `config.runs` (same shared settings and step budget) into DIR/runs/NAME;
4. fine-tuned: each fine-tuned checkpoint on the same grid, plus short-context perplexity at L0 against the base;
5. report: report.md (headline table and findings first), PNGs (perplexity, passkey, scaling, loss curves).

Resuming: every evaluation appends one finished cell at a time to DIR/results.jsonl and skips cells that are
already there (`ropescale.evaluate.ResultsFile`); a run folder with training.json is reused (after checking it
was trained with the same settings), one with a checkpoint continues from it (`finetune --resume`), and one
without is started again. A rerun of a finished study loads no model at all: it only redraws the report.

A fine-tuned run's rows belong to one checkpoint: DIR/measured.json records the sha256 of the training.json its
rows were measured from, and a run whose training.json has changed since (retrained by the study or by hand)
loses its rows, which are measured again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ropescale.evaluate import PasskeyTask, PerplexityTask, ResultsFile, RulerTask, ShortContextTask, evaluate
from ropescale.evaluate.ruler import THRESHOLD as RULER_THRESHOLD
from ropescale.evaluate.samples import samples_path
from ropescale.evaluate.driver import largest_unit, make_subject
from ropescale.evaluate.passkey import UNIFORM_BITS_PER_DIGIT, cell_prompts
from ropescale.evaluate.perplexity import default_lengths
from ropescale.evaluate.results import canonical

from ropescale.io import drop_json_lines, write_json_atomic, write_text_atomic
from ropescale.memory_plan import Estimate, check_fits, eval_knobs, train_knobs
from ropescale.model_info import ModelInfo, build_spec, check_spec_fits
from ropescale.models import load_config, load_tokenizer, resolve_device
from ropescale.report import load_rows, write_report
from ropescale.study.config import FinetuneRun, StudyConfig, is_spec_file
from ropescale.study.summary import Entry, collect, evaluated_target_length, findings, headline_table
from ropescale.train import loop
from ropescale.train.checkpoint import RUN_MARKERS, checkpoint_dirs, read_state
from ropescale.train.config import FinetuneConfig

RESULTS = "results.jsonl"
RUNS = "runs"
STUDY_RECORD = "study.json"
MEASURED = "measured.json"   # run name -> sha256 of the training.json its rows in results.jsonl measured
# what only a study writes in its folder (not study.yaml or runs/: a user's own recipe or runs folder has those
# names; study.json is written before any other file)
STUDY_MARKERS = (RESULTS, STUDY_RECORD)
# FinetuneConfig keys that do not change the trained weights: a finished run is reused whatever they say
NOT_IN_THE_WEIGHTS = ("output", "resume", "overwrite", "save_every", "keep_checkpoints", "report_to")


@dataclass(frozen=True)
class Target:
    """One evaluated model: what to load, the spec to apply on the fly, the label its rows carry."""

    entry: Entry
    model: str | None      # None/"embedded", a directory, a Hub id
    spec: Any = None       # RopeSpec | None
    label: str = ""


@dataclass
class Tally:
    """What one stage did in this invocation (a rerun of a finished study tallies zeros)."""

    stage: str
    seconds: float = 0.0
    cells_measured: int = 0
    steps_trained: int = 0
    runs: dict[str, str] = dataclasses.field(default_factory=dict)   # run name -> trained|resumed|restarted|reused


# ------------------------------------------------------------------------------------------ the tasks

@dataclass(frozen=True)
class Tasks:
    perplexity: Any
    passkey: Any
    short_context: Any
    ruler: Any = None   # RulerTask, or None when the recipe runs no RULER

    def settings(self) -> dict[str, dict]:
        """Result.task -> the settings its rows must carry (besides rope and dtype) to belong to this study."""
        tasks = (self.perplexity, self.passkey, self.short_context) + ((self.ruler,) if self.ruler else ())
        return {t.name: t.settings() for t in tasks}

    def of(self, stage: str, ruler_models: tuple[str, ...]) -> list:
        """The tasks a stage's models run: perplexity and passkey (and short-context after fine-tuning), RULER
        where the recipe asks for it."""
        tasks = [self.perplexity, self.passkey] + ([self.short_context] if stage == "fine-tuned" else [])
        return tasks + ([self.ruler] if self.ruler is not None and stage in ruler_models else [])


def passkey_lengths(tokenizer, lengths: list[int], depths) -> list[int]:
    """The lengths that hold a passkey prompt (the task line, the key line and the question need ~100 tokens;
    a tiny L0 may be shorter)."""
    def fits(length: int) -> bool:
        try:
            cell_prompts(tokenizer, length, depths[0], ["1" * 5], None)
        except ValueError:
            return False
        return True

    return [n for n in lengths if fits(n)]


def make_tasks(config: StudyConfig, lengths: list[int], passkey: list[int], l0: int, bos: bool) -> Tasks:
    e = config.eval
    text = {"data": e.data, "split": e.split, "text_field": e.text_field}
    # short-context scores exactly the perplexity grid's windows at L0: the first max_tokens tokens
    short_windows = e.max_windows
    if e.max_tokens is not None:
        short_windows = min(e.max_tokens // (l0 - bos), e.max_windows or e.max_tokens)
    return Tasks(
        perplexity=PerplexityTask(lengths=lengths, stride=e.stride, max_windows=e.max_windows,
                                  max_tokens=e.max_tokens, batch_size=e.batch_size, chunk_size=e.chunk_size, **text),
        passkey=PasskeyTask(lengths=passkey, depths=list(e.passkey_depths), trials=e.passkey_trials,
                            seed=e.passkey_seed, batch_size=e.passkey_batch_size),
        # the base model (not "the model without its spec": a fine-tuned model has no unscaled twin)
        short_context=ShortContextTask(baseline_model=config.model or "embedded", max_windows=short_windows,
                                       batch_size=e.batch_size, chunk_size=e.chunk_size, **text),
        ruler=RulerTask(lengths=lengths, samples=e.ruler_samples, seed=e.passkey_seed, qa_files=list(e.ruler_qa_files),
                        **({"tasks": list(e.ruler_tasks)} if e.ruler_tasks else {})) if e.ruler_samples else None)


# ------------------------------------------------------------------------------------------ entries

def strategy_of(finetune_config) -> str:
    """How a run deviates from full fine-tuning on full-length rows, for its table row ("" when it does not)."""
    parts = []
    if finetune_config.pose_window is not None:
        parts.append(f"PoSE {finetune_config.pose_window}")
    if finetune_config.lora_rank is not None:
        parts.append(f"LoRA r{finetune_config.lora_rank}")
    if finetune_config.passkey_share:
        parts.append(f"{finetune_config.passkey_share:.0%} passkey rows")
    return ", ".join(parts)


def training_free_targets(config: StudyConfig, info: ModelInfo) -> list[Target]:
    base = Target(Entry("default (no scaling)", config.label, "default", 1.0, "baseline"), config.model, None,
                  config.label)
    out = [base]
    for method in config.methods:
        if is_spec_file(method):  # rows carry the file's name, so two longrope specs stay apart
            spec = check_spec_fits(info, config.spec_of(method, "methods"))
            stem = Path(method).stem
            label, name = f"{config.label} [{stem}]", f"{stem} ({spec.method} ×{config.factor:g})"
        else:
            spec, label, name = build_spec(info, method, config.factor), config.label, f"{method} ×{config.factor:g}"
        out.append(Target(Entry(name, label, spec.method, float(spec.factor), "training-free"), config.model, spec,
                          label))
    return out


def run_label(run: FinetuneRun) -> str:
    return f"{run.name} (fine-tuned)"


def finetuned_target(config: StudyConfig, run: FinetuneRun, run_dir: Path, training: dict) -> Target:
    ft = config.finetune_config(run)
    strategy = strategy_of(ft)
    name = f"{run.method} ×{config.factor:g} fine-tuned" + (f" ({strategy})" if strategy else "")
    if run.name not in (run.method, f"{run.method}-pose", f"{run.method}-lora", f"{run.method}-pose-lora"):
        name += f" [{run.name}]"
    spec = _rope_of(run_dir)
    entry = Entry(name, run_label(run), spec.method, float(spec.factor), "fine-tuned", steps=training.get("steps"),
                  seconds=training.get("elapsed_s"), strategy=strategy)
    return Target(entry, str(run_dir), None, run_label(run))


def _rope_of(run_dir: Path):
    return ModelInfo.from_config(load_config(str(run_dir))).rope


# ------------------------------------------------------------------------------------------ fine-tuning

def settings_difference(saved: dict, wanted: dict) -> str | None:
    """A phrase naming the first setting that differs between a finished run and the recipe, or None. A key
    that a run saved by an older version lacks counts as its FinetuneConfig default."""
    defaults = FinetuneConfig().to_dict()
    for key in sorted(set(saved) | set(wanted)):
        if key in NOT_IN_THE_WEIGHTS:
            continue
        if saved.get(key, defaults.get(key)) != wanted.get(key, defaults.get(key)):
            return f"{key} {saved.get(key)!r} (the recipe now says {wanted.get(key)!r})"
    return None


def read_training(run_dir: Path) -> dict:
    """A finished run's training.json; ValueError naming the file when it is not what a ropescale run writes."""
    path = run_dir / "training.json"
    try:
        training = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        training = None
    if not isinstance(training, dict) or not isinstance(training.get("settings", {}), dict):
        raise ValueError(f"{str(path)!r} is not the training.json of a ropescale fine-tune run; delete the folder "
                         f"{str(run_dir)!r} to train it again")
    return training


def check_finished(config: StudyConfig, run: FinetuneRun, run_dir: Path) -> bool:
    """Whether the run in `run_dir` is finished (it has training.json); ValueError when that file is not a
    ropescale run's or the run was trained with other settings than the recipe's (its weights are not the run's)."""
    if not (run_dir / "training.json").is_file():
        return False
    saved = read_training(run_dir).get("settings", {})
    diff = settings_difference(saved, config.finetune_config(run, output=run_dir).to_dict())
    if diff:
        raise ValueError(f"fine-tune run {run.name!r} in {str(run_dir)!r} was trained with {diff}; delete that "
                         "folder to train it again, or give the study another `output`")
    return True


def checkpoint_fingerprint(run_dir: Path) -> str:
    """What tells one finished checkpoint of a run from another: the sha256 of its training.json (which holds
    its settings, final loss and wall time, so a run trained again never has the same one)."""
    return hashlib.sha256((run_dir / "training.json").read_bytes()).hexdigest()


def finetune_run(config: StudyConfig, run: FinetuneRun, run_dir: Path, log: Callable[[str], None],
                 force: bool = False) -> tuple[str, int]:
    """Train one run unless it is finished; returns (what happened, optimizer steps trained now). The study checked
    the step's memory up front (`check_study_memory`); a launched run checks its own, unless `force`."""
    wanted = config.finetune_config(run, output=run_dir)
    if check_finished(config, run, run_dir):
        log(f"  {run.name}: finished earlier ({wanted.steps} steps), reused")
        return "reused", 0
    checkpoints = checkpoint_dirs(run_dir)
    if checkpoints:
        start = read_state(checkpoints[-1]).step
        log(f"  {run.name}: resuming from step {start} of {wanted.steps}")
        status, flags = "resumed", {"resume": True}
    else:
        start = 0
        restart = run_dir.is_dir() and any(run_dir.iterdir())
        log(f"  {run.name}: {run.method} ×{config.factor:g}, {wanted.steps} steps"
            + (" (started again: the interrupted run had no checkpoint yet)" if restart else ""))
        status, flags = ("restarted" if restart else "trained"), ({"overwrite": True} if restart else {})
    ft = config.finetune_config(run, output=run_dir, **flags)
    if config.launcher:
        _launch(config.launcher, ft, run_dir, force)
    else:
        loop.finetune(ft, force=True)
    return status, wanted.steps - start


def _launch(launcher: tuple[str, ...], ft, run_dir: Path, force: bool = False) -> None:
    """`LAUNCHER -m ropescale finetune RECIPE --output DIR [--resume|--overwrite]` (torchrun, accelerate launch
    with an FSDP config...), from a recipe holding exactly this run's FinetuneConfig."""
    values = {k: v for k, v in ft.to_dict().items() if k not in ("output", "resume", "overwrite")}
    recipe = write_text_atomic(run_dir.parent / f"{run_dir.name}.finetune.yaml",
                               f"# {' '.join(launcher)} -m ropescale finetune THIS --output {run_dir}\n"
                               + yaml.safe_dump(values, sort_keys=False))
    command = [*launcher, "-m", "ropescale", "finetune", str(recipe), "--output", str(run_dir)]
    command += ["--resume"] if ft.resume else (["--overwrite"] if ft.overwrite else [])
    command += ["--force"] if force else []
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise ChildProcessError(f"fine-tune run {run_dir.name!r} failed: `{' '.join(command)}` exited with {code}; "
                                "rerun the study to continue from its last checkpoint")


# ------------------------------------------------------------------------------------------ evaluation

def evaluate_target(target: Target, tasks: list, results, device: str, dtype, progress: bool,
                    samples: Path | None = None) -> int:
    """Every task on one model; returns the number of cells measured now (0 when all were in results)."""
    cells = 0
    for task in tasks:   # memory was checked for every stage before the study began (`check_study_memory`)
        rows = evaluate(task, target.model, output=results, spec=target.spec, label=target.label, device=device,
                        dtype=dtype, progress=progress, samples=samples, force=True)
        cells += len({r.cell_key() for r in rows})
    return cells


# ------------------------------------------------------------------------------------------ the study

@dataclass
class Study:
    """What the stages of one study share: the recipe, where it writes, the grid and the models to evaluate."""

    config: StudyConfig
    out: Path
    results: Any             # ResultsFile
    l0: int
    lengths: list[int]
    tasks: Tasks
    device: str
    dtype: Any               # torch.dtype
    progress: bool
    log: Callable[[str], None]
    free: list[Target]       # the base model and every training-free method
    force: bool = False      # run even when the memory check says a stage cannot fit
    tuned: list[Target] = dataclasses.field(default_factory=list)   # filled by the fine-tune stage
    report: Path | None = None

    def evaluate(self, target: Target, stage: str) -> int:
        samples = samples_path(self.results.path) if self.config.eval.log_samples else None
        return evaluate_target(target, self.tasks.of(stage, self.config.eval.ruler_models), self.results,
                               self.device, self.dtype, self.progress, samples)


def run_study(config: StudyConfig, *, progress: bool = True, log: Callable[[str], None] | None = None,
              force: bool = False) -> Path:
    """Run (or continue) the study into `config.output`; returns the path of its report.md.

    Writes DIR/results.jsonl (every measured number), DIR/runs/NAME (each fine-tuned checkpoint with loss.csv and
    training.json), DIR/report.md with its PNGs, DIR/study.yaml (the recipe as run), DIR/measured.json (the
    checkpoint each run's rows measured) and DIR/study.json (what this invocation did: cells measured and steps
    trained per stage, seconds).

    Before anything is written, the largest unit of work of every stage (an evaluation cell, a training step) is
    checked against the device's memory (`check_study_memory`): ValueError when one cannot fit; `force` skips it.
    """
    study = open_study(config, progress, log or (lambda line: print(line, flush=True)), force)
    started = time.perf_counter()
    plan = stages(study)
    tallies = []
    for index, (name, text, work) in enumerate(plan, start=1):
        study.log(f"[{index}/{len(plan)}] {name}: {text}")
        with timed(Tally(name)) as tally:
            work(study, tally)
        tallies.append(tally)
    write_json_atomic(study.out / STUDY_RECORD, {
        "l0": study.l0, "lengths": study.lengths, "factor": config.factor,
        "target_length": evaluated_target_length(study.lengths, study.l0, config.factor),
        "seconds": round(time.perf_counter() - started, 3), "report": str(study.report),
        "stages": [dataclasses.asdict(t) for t in tallies]}, sort_keys=True)
    measured = sum(t.cells_measured for t in tallies)
    trained = sum(t.steps_trained for t in tallies)
    study.log(f"done in {time.perf_counter() - started:.0f} s: {measured} evaluation cells measured and {trained} "
              f"fine-tuning steps trained in this run (the rest reused from {study.out})")
    study.log(f"report: {study.report}")
    return study.report


def open_study(config: StudyConfig, progress: bool, log: Callable[[str], None], force: bool = False) -> Study:
    """Check the output folder and the results file, read the model's L0, build the tasks and every training-free
    spec, check every stage's memory (so that a bad recipe or a run that cannot fit fails before any work), and
    record the recipe as DIR/study.yaml."""
    if not config.output:
        raise ValueError("`output` is required: the folder for results.jsonl, the fine-tuned runs and the report")
    device = resolve_device(config.eval.device, "eval.device")   # before the model is read
    out = Path(config.output).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"`output` {str(out)!r} is a file; give a folder for the study")
    check_output(config, out)
    results = ResultsFile(out / RESULTS)
    if results.path.exists():
        results.read()   # a corrupt results file fails now, naming its line, not after the first stage
    info = ModelInfo.from_config(load_config(config.model))
    l0 = info.original_max_position_embeddings
    lengths = list(config.lengths or default_lengths(l0))
    tokenizer = load_tokenizer(config.model)
    asked = config.eval.passkey_lengths
    if asked is not None and not set(asked) <= set(lengths):
        raise ValueError(f"eval.passkey_lengths {list(asked)} must be some of the study's lengths {lengths}")
    if not force:   # before any prompt is built: a passkey prompt of a mistyped length alone can exhaust the memory
        bos = tokenizer.bos_token_id is not None
        check_study_memory(config, make_tasks(config, lengths, list(asked or lengths), l0, bos), device)
    keyed = passkey_lengths(tokenizer, list(asked or lengths), config.eval.passkey_depths)
    if not keyed:
        raise ValueError(f"lengths {lengths}: none is long enough for a passkey prompt; add a longer length")
    if keyed != list(asked or lengths):
        log(f"passkey at {', '.join(map(str, keyed))} only: shorter lengths cannot hold the prompt")
    tasks = make_tasks(config, lengths, keyed, l0, tokenizer.bos_token_id is not None)
    free = training_free_targets(config, info)
    out.mkdir(parents=True, exist_ok=True)
    # first, so that a study stopped before its first result is still known as one (`check_output`)
    write_json_atomic(out / STUDY_RECORD, {"l0": l0, "lengths": lengths, "factor": config.factor, "stages": []},
                      sort_keys=True)
    write_text_atomic(out / "study.yaml", f"# ropescale study {out / 'study.yaml'} --output {out}\n"
                      + yaml.safe_dump(_plain(config.to_dict() | {"output": None}), sort_keys=False))
    return Study(config, out, results, l0, lengths, tasks, device, getattr(torch, config.eval.dtype), progress, log,
                 free, force)


def check_output(config: StudyConfig, out: Path) -> None:
    """ValueError, before any work, when `out` holds files no study wrote, a run folder holds files no fine-tune
    wrote or a finished run that the recipe would not reuse, or the folder holds a study of another model (its
    rows and runs would pass for this model's)."""
    if out.is_dir() and any(out.iterdir()) and not any((out / name).is_file() for name in STUDY_MARKERS):
        raise ValueError(f"`output` {str(out)!r} holds files that no ropescale study wrote (no {RESULTS} or "
                         f"{STUDY_RECORD}); choose another `output`")
    if (out / RUNS).exists() and not (out / RUNS).is_dir():
        raise ValueError(f"`output`: {str(out / RUNS)!r} is a file, not the study's folder of fine-tune runs; move "
                         "it or choose another `output`")
    for run in config.runs:
        run_dir = out / RUNS / run.name
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"`output`: {str(run_dir)!r} is a file, not a fine-tune run's folder; move it or "
                             "choose another `output`")
        if run_dir.is_dir() and any(run_dir.iterdir()) and not any((run_dir / n).exists() for n in RUN_MARKERS):
            raise ValueError(f"`output`: {str(run_dir)!r} holds files that no ropescale fine-tune wrote; move them "
                             "or choose another `output`")
        check_finished(config, run, run_dir)
    read_measured(out)
    recorded = out / "study.yaml"
    if recorded.is_file():
        try:
            before = (yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}).get("model")
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
            return   # not readable as ours: rewritten below, and the runs check their own settings
        if _model_id(before) != _model_id(config.model):
            raise ValueError(f"`output` {str(out)!r} holds a study of model {before or 'embedded'!r}, not "
                             f"{config.model or 'embedded'!r}; give this study another `output`")


def _model_id(model) -> str:
    """The same model however it was named: embedded for None, a local folder by its absolute path."""
    if model is None or model == "embedded":
        return "embedded"
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def study_units(config: StudyConfig, tasks: Tasks, device: str) -> list[tuple[Estimate, str, str]]:
    """(estimate, what, knobs) of the largest unit of work of every evaluation task and every fine-tune run. A
    run started through `launcher` is left to check itself: its processes and GPUs are the launcher's."""
    model_config = load_config(config.model)
    subject = make_subject(model_config)
    dtype = getattr(torch, config.eval.dtype)
    units = []
    for task in (tasks.perplexity, tasks.passkey, tasks.short_context, tasks.ruler):
        largest = None if task is None else largest_unit(task, task.cells(subject), model_config, device, dtype)
        if largest is not None:
            est, cell, shape = largest
            units.append((est, f"the evaluation's {task.name} at {cell.length} tokens", eval_knobs(shape)))
    for run in [] if config.launcher else config.runs:
        shape, est, _ = loop.step_estimate(config.finetune_config(run))
        units.append((est, f"fine-tune run {run.name!r}: a training step of {shape.batch_size} x {shape.seq_len} "
                      "tokens", train_knobs(shape)))
    return units


def check_study_memory(config: StudyConfig, tasks: Tasks, device: str) -> None:
    """ValueError when the largest unit of work of any stage cannot fit on `device` (see `memory_plan.check_fits`),
    so that a long study does not die at its last stage."""
    units = study_units(config, tasks, device)
    if units:
        est, what, knobs = max(units, key=lambda unit: unit[0].total)
        check_fits(est, device, what, knobs)


@contextmanager
def timed(tally: Tally):
    """Time the work done inside into `tally.seconds`."""
    start = time.perf_counter()
    yield tally
    tally.seconds = round(time.perf_counter() - start, 3)


def stages(study: Study) -> list[tuple[str, str, Callable[[Study, Tally], None]]]:
    """The study's plan: (name, what it does, the work) per stage; fine-tuning only when the recipe has runs."""
    config, grid = study.config, f"{', '.join(map(str, study.lengths))} tokens (L0 = {study.l0})"
    ruler = " + RULER" if study.tasks.ruler is not None else ""
    plan = [("baseline", f"{study.free[0].entry.name}, perplexity + passkey{ruler} at {grid}", _baseline),
            ("training-free", f"{', '.join(config.methods) or 'no method'} ×{config.factor:g} at {grid}",
             _training_free)]
    if config.runs:
        steps = list(dict.fromkeys(config.finetune_config(r).steps for r in config.runs))
        plan += [("fine-tune", f"{', '.join(r.name for r in config.runs)} ×{config.factor:g}, "
                  f"{'/'.join(map(str, steps))} steps{' each' if len(steps) == 1 else ''}, into {study.out / RUNS}",
                  _finetune),
                 ("fine-tuned", f"each run at {grid}, and perplexity at L0 against the base model", _finetuned)]
    return plan + [("report", f"report.md and figures in {study.out}", _report)]


def _baseline(study: Study, tally: Tally) -> None:
    tally.cells_measured = study.evaluate(study.free[0], "baseline")


def _training_free(study: Study, tally: Tally) -> None:
    for target in study.free[1:]:
        tally.cells_measured += study.evaluate(target, "training-free")


def _finetune(study: Study, tally: Tally) -> None:
    measured = read_measured(study.out)
    for run in study.config.runs:
        run_dir = study.out / RUNS / run.name
        status, steps = finetune_run(study.config, run, run_dir, study.log, study.force)
        tally.runs[run.name], tally.steps_trained = status, tally.steps_trained + steps
        fingerprint = checkpoint_fingerprint(run_dir)
        # new weights (trained now, or since the rows were measured, or unknown): the rows are another checkpoint's;
        # recorded after they went and before any row of this checkpoint is measured
        if measured.get(run.name) != fingerprint:
            forget(study, run_label(run))
            measured[run.name] = fingerprint
            write_json_atomic(study.out / MEASURED, measured, sort_keys=True)
        training = read_training(run_dir)
        study.tuned.append(finetuned_target(study.config, run, run_dir, training))


def read_measured(out: Path) -> dict[str, str]:
    """DIR/measured.json: run name -> fingerprint of the checkpoint its rows measured ({} when absent)."""
    path = out / MEASURED
    try:
        measured = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        measured = None
    if not isinstance(measured, dict):
        raise ValueError(f"{str(path)!r} is not the record of a ropescale study (a mapping of run names to "
                         "checkpoint fingerprints); delete it to measure every fine-tuned run again")
    return measured


def forget(study: Study, label: str) -> None:
    """Drop the rows (and logged samples) of the model labelled `label` from the study's results."""
    dropped = drop_json_lines(study.results.path, lambda row: row.get("model") == label)
    drop_json_lines(samples_path(study.results.path), lambda row: row.get("model") == label)
    if dropped:
        study.log(f"  {label}: {dropped} result rows of another checkpoint dropped (they are measured again)")


def _finetuned(study: Study, tally: Tally) -> None:
    for target in study.tuned:
        tally.cells_measured += study.evaluate(target, "fine-tuned")


def _report(study: Study, tally: Tally) -> None:
    out, targets = study.out, study.free + study.tuned
    curves = {t.entry.name: out / RUNS / r.name / "loss.csv" for t, r in zip(study.tuned, study.config.runs)}
    study.report = write_study_report(out, [t.entry for t in targets], study.tasks, study.config, study.lengths,
                                      study.l0, curves)


def _plain(value):
    """Tuples as lists, so the recorded recipe is plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_study_report(out: Path, entries: list[Entry], tasks: Tasks, config: StudyConfig, lengths: list[int],
                       l0: int, loss_curves: dict[str, Path]) -> Path:
    """report.md that opens with the headline table and the findings, then every task's tables and figures."""
    expected = {task: canonical(s) for task, s in tasks.settings().items()}

    def current(row) -> bool:   # rows of this study's models, measured with this recipe's settings
        settings = {k: v for k, v in row.settings.items() if k not in ("rope", "dtype")}
        return (any(e.owns(row) for e in entries) and expected.get(row.task) == canonical(settings)
                and row.settings.get("dtype") == config.eval.dtype)

    rows = [r for r in load_rows([out / RESULTS]) if current(r)]
    numbers = collect(rows, entries)
    preface = headline_table(entries, numbers, lengths, l0) + [
        "",
        f"Bits per byte of held-out text at each context length (lower is better; **bold**: best at that length). "
        f"Passkey: accuracy averaged over lengths and depths ({config.eval.passkey_trials} trial(s) × "
        f"{len(config.eval.passkey_depths)} depth(s) per length), and key bits per digit (the key's teacher-forced "
        f"NLL / ln 2 per digit; guessing pays log2 10 = {UNIFORM_BITS_PER_DIGIT:.2f}, retrieval ~0); effective "
        "length: the longest length with passkey accuracy ≥ 80 % at every length up to it. "
        + (f"RULER: the average score over its tasks that fit each length ({config.eval.ruler_samples} sample(s) per "
           "task and length), averaged over lengths; RULER effective length: the longest length whose average is "
           f"≥ {RULER_THRESHOLD} at every length up to it. " if tasks.ruler is not None else "")
        + "Fine-tune time: wall clock of the run.",
        "", "## Findings", "", *findings(entries, numbers, lengths, l0, config.factor), "", "---", ""]
    title = (f"ropescale study: {config.label}, L0 = {l0} → ×{config.factor:g} "
             f"({evaluated_target_length(lengths, l0, config.factor)} tokens)")
    curves = {name: path for name, path in loss_curves.items() if path.is_file()}
    paths = write_report([out / RESULTS], out, loss_curves=curves, select=current, title=title, preface=preface)
    return next(p for p in paths if p.name == "report.md")


__all__ = ["Target", "Tally", "Tasks", "evaluate_target", "finetune_run", "make_tasks", "run_study",
           "settings_difference", "write_study_report"]
