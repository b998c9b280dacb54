"""StudyConfig: what `ropescale study` compares, read from a YAML recipe (or built in Python).

A recipe has six parts; every key below is accepted and any other key raises ValueError naming it:

    model: embedded                 # the model to extend (None/"embedded", a directory, a Hub id)
    factor: 16                      # scale factor s of every method and fine-tune run (target length s·L0)
    lengths: [256, ..., 4096]       # evaluation lengths (null: 1, 2, 4, 8, 16 × L0)
    methods: [linear, ntk, ...]     # training-free methods compared against `default` (the unscaled model); an
                                    # entry ending in .json is a RopeSpec file (e.g. a searched longrope spec)
    eval: {max_windows: 4, ...}     # EvalSettings fields
    finetune: {steps: 200, ...}      # FinetuneConfig fields shared by every run (same step budget each)
    runs:                           # the fine-tune runs: a name, a method, and per-run FinetuneConfig fields
      - {name: yarn, method: yarn}
      - {name: yarn-pose, method: yarn, pose_window: 512}
      - {name: searched, spec: recipes/specs/embedded-longrope-x8.json}   # fine-tune from a spec file

Every fine-tune run is checked as a complete `FinetuneConfig` when the recipe is read, so a bad key in
`finetune:` or a run fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropescale.data.ruler import TASKS as RULER_TASKS
from ropescale.rope import METHODS

DEFAULT_METHODS = ("linear", "ntk", "dynamic", "yarn", "dynamic-yarn")
# keys of FinetuneConfig that the study sets itself, per run
STUDY_OWNED = ("model", "method", "factor", "output", "resume", "overwrite")
DTYPES = ("float32", "bfloat16", "float16")
RULER_STAGES = ("baseline", "training-free", "fine-tuned")
# RULER's retrieval and tracing tasks that fit the embedded model's L0 = 256 (the others need 290+ tokens)
DEMO_RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "vt")
# the demo's fine-tuning budget (recipes/study-embedded.yaml explains each value)
DEMO_FINETUNE = {"data": "embedded", "steps": 200, "seq_len": 2048, "batch_size": 1, "lr": 3.0e-4, "warmup_steps": 20,
                 "schedule": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "gradient_checkpointing": False,
                 "save_every": 25, "seed": 42, "passkey_share": 0.5, "passkey_mix": "pretraining"}


@dataclass(frozen=True)
class EvalSettings:
    """How every model of the study is evaluated (the same for all, so the numbers compare)."""

    data: str = "embedded"            # perplexity text (ropescale.data.load_texts source)
    split: str = "eval"               # the held-out split of `data`
    text_field: str = "text"
    max_tokens: int | None = 16384    # perplexity on the first max_tokens tokens of `data` at every length (the
    #                                   same text everywhere: 4 windows of 4096, 64 of 256); None: all of it
    max_windows: int | None = None    # and at most this many windows per length (None: no cap)
    stride: int | None = None         # sliding-window perplexity (None: non-overlapping windows)
    passkey_trials: int = 3           # keys per (length, depth) cell
    passkey_depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    passkey_lengths: tuple[int, ...] | None = None   # passkey at these of the study's lengths (None: all of them)
    passkey_seed: int = 0
    batch_size: int = 1               # perplexity windows per forward pass
    passkey_batch_size: int = 8       # passkey trials per forward pass
    ruler_samples: int = 5            # RULER prompts per task and length (0: no RULER)
    ruler_tasks: tuple[str, ...] | None = DEMO_RULER_TASKS   # RULER tasks (None: all 13; QA needs ruler_qa_files)
    ruler_models: tuple[str, ...] = ("baseline", "fine-tuned")   # which stages run RULER
    ruler_qa_files: tuple[str, ...] = ()   # SQuAD / HotpotQA JSON files for qa_1 / qa_2 (without: skipped)
    log_samples: bool = True          # write every passkey / RULER output to DIR/results.samples.jsonl
    chunk_size: int | None = None     # positions per logits chunk (None: sized from the vocabulary)
    dtype: str = "float32"            # weights dtype for evaluation (bfloat16 for 7B models on GPUs)
    device: str | None = None         # None: cuda when available, else cpu

    def __post_init__(self):
        for name in ("passkey_trials", "batch_size", "passkey_batch_size"):
            _require(f"eval.{name}", _is_int(getattr(self, name)) and getattr(self, name) >= 1, "a positive integer")
        for name in ("max_tokens", "max_windows", "stride", "chunk_size"):
            value = getattr(self, name)
            _require(f"eval.{name}", value is None or (_is_int(value) and value >= 1), "a positive integer or null")
        _require("eval.passkey_seed", _is_int(self.passkey_seed), "an integer")
        _require("eval.ruler_samples", _is_int(self.ruler_samples) and self.ruler_samples >= 0,
                 "a non-negative integer")
        _require("eval.ruler_tasks", self.ruler_tasks is None or (isinstance(self.ruler_tasks, (list, tuple)) and all(
            isinstance(t, str) and t in RULER_TASKS for t in self.ruler_tasks) and len(self.ruler_tasks) > 0),
                 "null or a non-empty list of " + ", ".join(RULER_TASKS))
        if self.ruler_tasks is not None:
            object.__setattr__(self, "ruler_tasks", tuple(self.ruler_tasks))
        _require("eval.ruler_models", isinstance(self.ruler_models, (list, tuple)) and all(
            isinstance(m, str) and m in RULER_STAGES for m in self.ruler_models), "a list of " + ", ".join(RULER_STAGES))
        object.__setattr__(self, "ruler_models", tuple(self.ruler_models))
        _require("eval.ruler_qa_files", isinstance(self.ruler_qa_files, (list, tuple)) and all(
            isinstance(f, str) for f in self.ruler_qa_files), "a list of file paths")
        object.__setattr__(self, "ruler_qa_files", tuple(self.ruler_qa_files))
        _require("eval.log_samples", isinstance(self.log_samples, bool), "true or false")
        depths = self.passkey_depths
        _require("eval.passkey_depths", isinstance(depths, (list, tuple)) and len(depths) > 0 and all(
            _is_number(d) and 0.0 <= d <= 1.0 for d in depths), "a non-empty list of numbers in [0, 1]")
        object.__setattr__(self, "passkey_depths", tuple(float(d) for d in depths))
        keyed = self.passkey_lengths
        _require("eval.passkey_lengths", keyed is None or (isinstance(keyed, (list, tuple)) and len(keyed) > 0 and all(
            _is_int(n) and n >= 2 for n in keyed)), "null or a non-empty list of integers >= 2")
        if keyed is not None:
            object.__setattr__(self, "passkey_lengths", tuple(sorted(set(keyed))))
        _require("eval.dtype", self.dtype in DTYPES, "one of " + ", ".join(DTYPES))
        for name in ("data", "split", "text_field"):
            _require(f"eval.{name}", isinstance(getattr(self, name), str), "a string")
        _require("eval.device", self.device is None or isinstance(self.device, str), "a string or null")


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tune run of the study: `name` (its folder and its label), `method`, and per-run settings
    (FinetuneConfig fields, e.g. pose_window or lora_rank) on top of the shared `finetune:` section."""

    name: str
    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _require("runs[].name", isinstance(self.name, str) and self.name.strip() != "" and
                 all(c.isalnum() or c in "-_.+" for c in self.name) and not self.name.startswith("."),
                 f"a folder name of letters, digits and - _ . + (got {self.name!r})")
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"runs[{self.name}].method must be one of {', '.join(METHODS)}, got {self.method!r}")
        owned = sorted(set(self.settings) & set(STUDY_OWNED))
        if owned:
            raise ValueError(f"runs[{self.name}]: key {owned[0]!r} is set by the study (model and factor at the "
                             "top of the recipe, method per run, output under --output)")

    @classmethod
    def from_dict(cls, values: Any, index: int) -> FinetuneRun:
        if not isinstance(values, dict):
            raise ValueError(f"runs[{index}] must be a mapping with name, method and FinetuneConfig keys, "
                             f"got {values!r}")
        values = dict(values)
        method = values.pop("method", None)
        if not isinstance(values.get("spec"), (str, type(None))):
            raise ValueError(f"runs[{index}].spec must be the path of a RopeSpec JSON file (such as the best.json "
                             f"of ropescale search), got {values['spec']!r}")
        if method is not None and values.get("spec") is not None:
            raise ValueError(f"runs[{index}]: method and spec exclude each other (the spec file holds the method)")
        if method is None and isinstance(values.get("spec"), str):
            from ropescale.rope.spec import read_spec

            method = read_spec(values["spec"], field=f"runs[{index}].spec").method
        if method is None:
            raise ValueError(f"runs[{index}] needs a method (one of {', '.join(METHODS)}) or a spec file")
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"runs[{index}].method must be one of {', '.join(METHODS)}, got {method!r}")
        name = values.pop("name", None) or _default_name(method, values)
        return cls(name=name, method=method, settings=values)


def is_spec_file(entry: str) -> bool:
    """A `methods` entry that names a RopeSpec JSON file rather than a method."""
    return isinstance(entry, str) and entry.lower().endswith(".json")


def _default_name(method: str, settings: dict) -> str:
    return method + ("-pose" if settings.get("pose_window") else "") + ("-lora" if settings.get("lora_rank") else "")


def default_runs() -> tuple[FinetuneRun, ...]:
    """yarn and linear at the training length (the YaRN paper's comparison, equal steps), and yarn with PoSE
    windows of 256 tokens, the embedded model's L0 (PoSE trains in windows of the original length)."""
    return (FinetuneRun("yarn", "yarn"), FinetuneRun("linear", "linear"),
            FinetuneRun("yarn-pose", "yarn", {"pose_window": 256}))


@dataclass(frozen=True)
class StudyConfig:
    """Settings of `ropescale.study.run_study`; recipe keys are the field names (see the module docstring)."""

    output: str | None = None
    model: str | None = "embedded"
    model_label: str | None = None          # the name rows carry for the base model (default: the --model value)
    factor: float = 16.0
    lengths: tuple[int, ...] | None = None  # None: 1, 2, 4, 8, 16 × L0
    methods: tuple[str, ...] = DEFAULT_METHODS
    eval: EvalSettings = field(default_factory=EvalSettings)
    finetune: dict[str, Any] = field(default_factory=lambda: dict(DEMO_FINETUNE))
    runs: tuple[FinetuneRun, ...] = field(default_factory=default_runs)
    launcher: tuple[str, ...] | None = None  # e.g. [accelerate, launch, --num_processes, "8"]: fine-tune in a
    #                                          subprocess `LAUNCHER -m ropescale finetune` (None: in process)

    def __post_init__(self):
        _require("factor", _is_number(self.factor) and math.isfinite(self.factor) and self.factor > 1,
                 "a number > 1 (the scale factor s)")
        if self.lengths is not None:
            _require("lengths", isinstance(self.lengths, (list, tuple)) and len(self.lengths) > 0 and all(
                _is_int(n) and n >= 2 for n in self.lengths), "a non-empty list of integers >= 2, or null")
            object.__setattr__(self, "lengths", tuple(sorted(set(self.lengths))))
        _require("methods", isinstance(self.methods, (list, tuple)) and all(isinstance(m, str) for m in self.methods),
                 "a list of method names or RopeSpec JSON files")
        bad = [m for m in self.methods if m not in METHODS and not is_spec_file(m)]
        if bad:
            raise ValueError(f"methods: {bad[0]!r} is not a method; accepted: {', '.join(METHODS)}, or a RopeSpec "
                             "JSON file (e.g. the best.json of `ropescale search`)")
        for path in filter(is_spec_file, self.methods):
            self.spec_of(path, "methods")  # readable, and made for this factor
        object.__setattr__(self, "methods", tuple(dict.fromkeys(m for m in self.methods if m != "default")))
        for name in ("model", "model_label", "output"):
            _require(name, getattr(self, name) is None or isinstance(getattr(self, name), str), "a string")
        if isinstance(self.eval, dict):
            object.__setattr__(self, "eval", _build(EvalSettings, self.eval, "eval"))
        _require("eval", isinstance(self.eval, EvalSettings), "a mapping of EvalSettings keys (max_tokens, "
                 "passkey_trials, ruler_samples, ...)")
        _require("finetune", isinstance(self.finetune, dict), "a mapping of FinetuneConfig keys")
        owned = sorted(set(self.finetune) & set(STUDY_OWNED))
        if owned:
            raise ValueError(f"finetune: key {owned[0]!r} is set by the study (model and factor at the top of the "
                             "recipe, method per run, output under --output)")
        _require("runs", isinstance(self.runs, (list, tuple)), "a list of fine-tune runs (each a mapping with a "
                 "name and a method or spec), or [] for none")
        runs = [r if isinstance(r, FinetuneRun) else FinetuneRun.from_dict(r, i) for i, r in enumerate(self.runs)]
        names = [r.name for r in runs]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"runs: two runs are named {duplicate!r}; give each a distinct name")
        object.__setattr__(self, "runs", tuple(runs))
        if self.launcher is not None:
            _require("launcher", isinstance(self.launcher, (list, tuple)) and len(self.launcher) > 0 and all(
                isinstance(a, str) for a in self.launcher), "a list of strings (a command prefix) or null")
            object.__setattr__(self, "launcher", tuple(self.launcher))
        for run in self.runs:
            self.finetune_config(run)  # every run must be a valid FinetuneConfig now, not after an hour

    # ------------------------------------------------------------------------------------------ derived

    def spec_of(self, path: str, where: str):
        """The RopeSpec in a spec file of the recipe; ValueError when it is not made for the study's factor."""
        from ropescale.rope.spec import read_spec

        spec = read_spec(path, field=where)
        if spec.factor != float(self.factor):
            raise ValueError(f"{where}: {path!r} has factor {spec.factor:g}, the study's is {float(self.factor):g}")
        return spec

    def finetune_config(self, run: FinetuneRun, output: str | Path | None = None, **flags):
        """The FinetuneConfig of one run: shared settings, then the run's own, then model/method/factor (or the
        run's `spec` file, which holds method and factor)."""
        from ropescale.train.config import FinetuneConfig, yaml_floats

        values = {**yaml_floats(self.finetune), **yaml_floats(run.settings), "model": self.model,
                  "output": None if output is None else str(output), **flags}
        if values.get("spec") is None:
            values.update(method=run.method, factor=float(self.factor))
        else:
            self.spec_of(values["spec"], f"runs[{run.name}].spec")
        steps = values.get("steps", 200)
        if values.get("save_every") is None and _is_int(steps) and steps >= 1:
            values["save_every"] = max(1, math.ceil(steps / 10))  # an interrupted study resumes from here
        try:
            return FinetuneConfig.from_dict(values)
        except ValueError as exc:  # the recipe's keys, not flags: said without the backticks fields carry
            raise ValueError(f"runs[{run.name}]: {str(exc).replace('`', '')}") from None

    @property
    def label(self) -> str:
        """What the base model's rows are called: model_label, else the --model value (embedded by default)."""
        if self.model_label:
            return self.model_label
        return Path(self.model).name if self.model and Path(self.model).exists() else (self.model or "embedded")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # a spec run is recorded as it was given: its spec file holds the method (the two exclude each other)
        out["runs"] = [{"name": r.name, **({} if r.settings.get("spec") else {"method": r.method}), **r.settings}
                       for r in self.runs]
        return out

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, values: Any, **overrides) -> StudyConfig:
        """From a recipe mapping; unknown keys raise ValueError naming the key and the accepted ones."""
        if not isinstance(values, dict):
            raise ValueError(f"a study recipe must be a mapping of settings, got {type(values).__name__}")
        values = {**values, **{k: v for k, v in overrides.items() if v is not None}}
        return _build(cls, values, "")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> StudyConfig:
        """Load a YAML recipe; `overrides` (flags that were given, e.g. output) replace its values."""
        from ropescale.train.config import read_recipe

        values = read_recipe(path)
        try:
            return cls.from_dict(values, **overrides)
        except ValueError as exc:
            raise ValueError(f"recipe {str(path)!r}: {exc}") from None


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'the recipe'} must be a mapping, got {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ValueError(f"unknown study recipe key {key!r}; accepted{' in ' + where if where else ''}: "
                         f"{', '.join(known)}")
    return cls(**values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(name: str, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {accepted}")
