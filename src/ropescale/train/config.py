"""FinetuneConfig: every setting of a fine-tuning run, built from a YAML recipe, from CLI flags, or in Python.

Recipe keys are the field names below. A key that is unknown, or a value of the wrong type, raises ValueError
naming the key and what it accepts, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropescale.data.synthetic import parse_mix
from ropescale.model_info import SPEC_KNOBS, check_needs_method
from ropescale.rope import METHODS
from ropescale.settings import knob, setting

SCHEDULES = ("constant", "linear", "cosine")
TRACKERS = ("tensorboard", "wandb")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
TRAINABLE_WITH_LORA = ("embed", "norm")   # LongLoRA §3.3: plain LoRA fails at long context; these fix it


@dataclass
class FinetuneConfig:
    """Settings of `ropescale.train.finetune`. Defaults follow the YaRN paper (§4.1) for a real model."""

    output: str | None = setting(None, "run directory: final checkpoint, loss.csv, training.json, checkpoints/")
    model: str | None = setting(None, "checkpoint directory or Hugging Face Hub id (default: the embedded model)")
    # RoPE scaling; method None trains the model with the rope it was saved with
    method: str | None = setting(None, "scaling method (default: the model's own rope)", choices=tuple(METHODS))
    factor: float | None = setting(None, "scale factor s = target length / L0 (default: 1)")
    spec: str | None = setting(None, "a RopeSpec JSON file (e.g. the best.json of `ropescale search`) instead of "
                                     "method, factor and the knobs")
    rope_theta: float | None = knob("rope_theta")
    attention_factor: float | None = knob("attention_factor")
    beta_fast: float | None = knob("beta_fast")
    beta_slow: float | None = knob("beta_slow")
    low_freq_factor: float | None = knob("low_freq_factor")
    high_freq_factor: float | None = knob("high_freq_factor")
    original_max_position_embeddings: int | None = setting(
        None, "L0, the length the model was trained at (default: read from its config.json)")
    # data
    data: str = setting("embedded", "'embedded', a .txt/.jsonl file or folder, hf:NAME (ropescale.data.load_texts)")
    text_field: str = setting("text", "jsonl/dataset column holding the text")
    data_split: str = setting("train", "split of 'embedded' or hf: data")
    seq_len: int | None = setting(None, "training sequence length (default: L0 x factor, the target length)")
    passkey_share: float = setting(0.0, "fraction of rows made of synthetic retrieval documents (passkey and RULER "
                                        "formats, the kind the embedded model is pretrained on), fillers from the "
                                        "data, scored on their answers only")
    passkey_mix: str | None = setting(None, "formats of those documents and their shares, e.g. "
                                            "'passkey=0.1,niah_single_3=0.3,vt=0.1', or 'pretraining' (the "
                                            "embedded model's pretraining mix; default: "
                                            "ropescale.data.synthetic.TRAINING_MIX)")
    # optimisation (YaRN paper: AdamW β=(0.9, 0.95), lr 2e-5, no weight decay, 20 warmup steps)
    steps: int = setting(200, "optimizer steps")
    batch_size: int = setting(1, "rows per process per micro-step")
    grad_accum: int = setting(1, "micro-steps per optimizer step")
    lr: float = setting(2e-5, "peak learning rate (YaRN's)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    adam_beta1: float = setting(0.9, "AdamW β1")
    adam_beta2: float = setting(0.95, "AdamW β2")
    warmup_steps: int = setting(20, "linear warmup steps")
    schedule: str = setting("constant", "learning rate after warmup", choices=SCHEDULES)
    max_grad_norm: float | None = setting(1.0, "clip the gradient norm to this (None or 0: no clipping)")
    seed: int = setting(42, "seed of data order, PoSE and LoRA init")
    # memory
    gradient_checkpointing: bool = setting(True, "recompute activations in the backward pass (less memory)")
    loss_chunk_size: int | None = setting(None, "positions per output-layer chunk in the loss (default: 128 MiB "
                                                "of logits)")
    # strategies
    lora_rank: int | None = setting(None, "LoRA on lora_targets with trainable embeddings and norms (LongLoRA); "
                                          "merged on save")
    lora_alpha: float | None = setting(None, "LoRA alpha (default: 2 x rank)")
    lora_targets: list[str] = setting(LORA_TARGETS, "modules that get LoRA adapters")
    lora_trainable: list[str] = setting(TRAINABLE_WITH_LORA, "parameters trained in full beside LoRA (by name)")
    pose_window: int | None = setting(None, "PoSE: train on windows of this many tokens with positions skipped "
                                            "over the target length")
    pose_chunks: int = setting(2, "PoSE: chunks per window")
    sequence_parallel: int = setting(1, "split each row's sequence over N processes (DeepSpeed Ulysses through "
                                         "accelerate; rows padded to a multiple of N); launch a multiple of N "
                                         "processes; needs pip install 'ropescale[deepspeed]'")
    # checkpoints and reporting
    save_every: int | None = setting(None, "checkpoint every K steps")
    keep_checkpoints: int = setting(2, "checkpoints kept")
    resume: bool = setting(False, "continue the run in output from its last checkpoint")
    overwrite: bool = setting(False, "delete a previous run in output and start again")
    report_to: str | None = setting(None, "also log to TensorBoard or W&B", choices=TRACKERS)

    def __post_init__(self):
        check_types(dataclasses.asdict(self))
        for name in ("steps", "batch_size", "grad_accum", "keep_checkpoints", "pose_chunks", "sequence_parallel"):
            _require(name, getattr(self, name) >= 1, "a positive integer")
        for name in ("loss_chunk_size", "seq_len", "lora_rank", "pose_window", "save_every",
                     "original_max_position_embeddings"):
            _require(name, getattr(self, name) is None or getattr(self, name) >= 1, "a positive integer")
        _require("seq_len", self.seq_len is None or self.seq_len >= 2, "an integer >= 2")
        _require("warmup_steps", self.warmup_steps >= 0, "an integer >= 0")
        _require("passkey_share", 0 <= self.passkey_share < 1, "a number in [0, 1)")
        if self.passkey_mix is not None:
            _require("passkey_mix", self.passkey_share > 0, "unset when passkey_share is 0 (no synthetic rows to mix)")
            try:
                parse_mix(self.passkey_mix)
            except ValueError as exc:
                raise ValueError(f"passkey_mix: {exc}") from None
        _require("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number")
        _require("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a number >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            _require(name, 0 <= getattr(self, name) < 1, "a number in [0, 1)")
        _require("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm >= 0, "a number >= 0")
        _require("lora_alpha", self.lora_alpha is None or self.lora_alpha > 0, "a positive number")
        _require("schedule", self.schedule in SCHEDULES, "one of " + ", ".join(SCHEDULES))
        _require("report_to", self.report_to in (None, *TRACKERS), "one of " + ", ".join(TRACKERS))
        _require("lora_targets", bool(self.lora_targets), "a non-empty list of module names")
        self._check_spec_fields()
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues DIR, overwrite restarts it")

    def _check_spec_fields(self) -> None:
        # the spec itself is built (and range-checked by RopeSpec) once the model's config is known
        settings = {name: getattr(self, name) for name in ("factor", *SPEC_KNOBS, "original_max_position_embeddings")}
        if self.spec is not None:
            given = [name for name, value in {"method": self.method, **settings}.items() if value is not None]
            if given:
                raise ValueError(f"`spec` and `{given[0]}` exclude each other: the spec file holds the method, the "
                                 "factor and its settings")
            return
        check_needs_method(self.method, **settings)
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """From a recipe mapping; unknown keys raise ValueError listing the accepted ones."""
        if not isinstance(values, dict):
            raise ValueError(f"a recipe must be a mapping of settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown recipe key {unknown[0]!r}; accepted keys: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> FinetuneConfig:
        """Load a YAML recipe; `overrides` (e.g. CLI flags that were given) replace its values."""
        values = read_recipe(path)
        if not isinstance(values, dict):
            raise ValueError(f"recipe {str(path)!r} must be a mapping of settings, got {type(values).__name__}")
        return cls.from_dict({**yaml_floats(values), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_recipe(path: str | Path) -> Any:
    """The parsed YAML of a recipe file (empty file: {}); a missing file or bad YAML is one ValueError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {str(path)!r} is not valid YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError:
        raise ValueError(f"recipe {str(path)!r} is not UTF-8 text") from None


def yaml_floats(values: dict[str, Any]) -> dict[str, Any]:
    """YAML 1.1 (PyYAML) reads `2e-5` as a string (it wants `2.0e-5`); accept it for float keys."""
    hints = typing.get_type_hints(FinetuneConfig)
    out = dict(values)
    for name, value in values.items():
        if isinstance(value, str) and name in hints and _accepts(hints[name], 1.5) and not _accepts(hints[name], ""):
            try:
                out[name] = float(value)
            except ValueError:
                pass   # left as is: check_types names the key
    return out


def _require(name: str, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"`{name}` must be {accepted}")


def _accepts(kind, value) -> bool:
    """isinstance for the annotations used above: int, float (ints accepted), str, bool, X | None, list[str]."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return "null" if kind is type(None) else kind.__name__


def check_types(values: dict[str, Any]) -> None:
    hints = typing.get_type_hints(FinetuneConfig)
    for name, value in values.items():
        if not _accepts(hints[name], value):
            raise ValueError(f"recipe key {name!r} must be {_type_name(hints[name])}, got {value!r}")
