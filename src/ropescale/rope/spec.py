"""`RopeSpec`: one frozen, validated description of a RoPE scaling, with transformers' field names."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropescale.rope.methods import BETA_FAST, BETA_SLOW, METHODS

# fields holding one real number; the first three always have a value
_NUMBER_FIELDS = ("rope_theta", "factor", "partial_rotary_factor", "attention_factor", "beta_fast", "beta_slow",
                  "mscale", "mscale_all_dim", "low_freq_factor", "high_freq_factor")
_ALWAYS_SET = ("method", "rope_theta", "factor", "partial_rotary_factor")
_SEQUENCE_FIELDS = ("short_factor", "long_factor")
_FIELD_NOTES = {"original_max_position_embeddings": "the pretraining context length L0"}


@dataclass(frozen=True, repr=False)
class RopeSpec:
    """A RoPE scaling: the method (a key of `METHODS`) and its parameters, named as in transformers.

    Validated when built: a wrong type raises TypeError, a bad value ValueError; both name the field and what
    it accepts. A field the method does not read must stay at its default (a stray `beta_fast` on `linear` is
    an error, not ignored). Numbers are stored as floats and lists as tuples, so equal specs compare equal.

    Example: `RopeSpec(method="yarn", factor=16.0, original_max_position_embeddings=4096)`.
    """

    method: str
    rope_theta: float = 10000.0
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    attention_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    partial_rotary_factor: float = 1.0

    def __post_init__(self) -> None:
        _normalise_types(self)
        _check_ranges(self)
        _check_method_fields(self)

    def __repr__(self) -> str:
        shown = [f"method={self.method!r}", f"rope_theta={self.rope_theta!r}"]
        for field in dataclasses.fields(self)[2:]:
            value = getattr(self, field.name)
            if value != field.default:
                shown.append(f"{field.name}={value!r}")
        return f"RopeSpec({', '.join(shown)})"

    def record(self) -> dict[str, Any]:
        """The fields that are set, as a plain JSON-able dict (lists for tuples); `RopeSpec(**record)` rebuilds
        the spec. Result rows and ropescale.json carry it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if v is not None}

    # ------------------------------------------------------------ transformers / runtimes

    def to_hf(self, head_dim: int | None = None) -> dict[str, Any]:
        """The dict for `config.rope_parameters` (transformers 5 schema); see `ropescale.rope.hf.spec_to_hf`.

        `head_dim` is needed only for `ntk`, whose native base θ·s^(d/(d−2)) depends on the rotary dim.
        """
        from ropescale.rope.hf import spec_to_hf

        return spec_to_hf(self, head_dim)

    def to_legacy_hf(self, head_dim: int | None = None) -> tuple[float, dict[str, Any]]:
        """`(rope_theta, rope_scaling)` for transformers 4.x config.json: the `to_hf()` dict without rope_theta.

        Write both these and `rope_parameters` so that 4.x and 5.x load the checkpoint alike (5.x prefers
        `rope_scaling` when both are present, so they must say the same thing, which they do).
        """
        params = self.to_hf(head_dim)
        rope_theta = params.pop("rope_theta")
        return rope_theta, params

    @classmethod
    def from_hf(cls, config: Any) -> RopeSpec:
        """The spec of a transformers config object, a config.json dict, or a `rope_parameters` dict.

        See `ropescale.rope.hf.spec_from_hf`; `RopeSpec.from_hf(spec.to_hf(head_dim))` == spec for every method.
        """
        from ropescale.rope.hf import spec_from_hf

        return spec_from_hf(config)

    def max_position_embeddings(self) -> int:
        """The `max_position_embeddings` to write in config.json next to `to_hf()`.

        - L0·factor for yarn, ntk-by-parts, llama3, longrope: transformers' yarn check expects it and vLLM reads
          it as the extended length for these types.
        - L0·factor for ntk and abf: they are written as `rope_type="default"`, which carries no factor, so
          runtimes (vLLM's max_model_len, llama.cpp's context_length) learn the extended length only from here.
        - L0 for linear and dynamic: vLLM multiplies it by `factor`, and transformers' dynamic NTK uses it as
          the original length (interop reference §5).
        - L0 for dynamic-yarn: transformers' `dynamic_rope_update` recomputes only once the length passes
          `max_position_embeddings`, so it must be L0 for the scaling to start at L0.
        - L0 for default (factor is 1).
        """
        if self.original_max_position_embeddings is None:
            raise ValueError(f"max_position_embeddings() needs RopeSpec.original_max_position_embeddings "
                             f"(the pretraining context length) for {self!r}")
        scale = self.factor if METHODS[self.method].extends_max_positions else 1.0
        return int(round(self.original_max_position_embeddings * scale))


# ---------------------------------------------------------------- validation


def _set(spec: RopeSpec, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)  # normalising a frozen dataclass inside __post_init__


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _normalise_types(spec: RopeSpec) -> None:
    """Type checks (TypeError naming the field); ints become floats, lists become tuples; NaN/inf rejected."""
    if not isinstance(spec.method, str):
        raise TypeError(f"RopeSpec.method must be a str, one of {sorted(METHODS)}; got {spec.method!r}")
    for name in _NUMBER_FIELDS:
        value = getattr(spec, name)
        if value is None and name not in _ALWAYS_SET:
            continue
        if not _is_real(value):
            raise TypeError(f"RopeSpec.{name} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"RopeSpec.{name} must be finite, got {value}")
        _set(spec, name, float(value))
    l0 = spec.original_max_position_embeddings
    if l0 is not None and (isinstance(l0, bool) or not isinstance(l0, numbers.Integral)):
        raise TypeError(f"RopeSpec.original_max_position_embeddings must be an int (the pretraining context "
                        f"length), got {type(l0).__name__} {l0!r}")
    if l0 is not None:
        _set(spec, "original_max_position_embeddings", int(l0))
    if spec.truncate is not None and not isinstance(spec.truncate, bool):
        raise TypeError(f"RopeSpec.truncate must be True, False or None, got {spec.truncate!r}")
    for name in _SEQUENCE_FIELDS:
        value = getattr(spec, name)
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"RopeSpec.{name} must be a list of numbers, got {type(value).__name__} {value!r}")
        value = tuple(value)
        if not all(_is_real(x) for x in value):
            raise TypeError(f"RopeSpec.{name} must be a list of numbers, got {value!r}")
        if not value or not all(math.isfinite(x) and x > 0 for x in value):
            raise ValueError(f"RopeSpec.{name} must be a non-empty list of finite numbers > 0, got {value!r}")
        _set(spec, name, tuple(float(x) for x in value))


def _check_ranges(spec: RopeSpec) -> None:
    """Value checks that do not depend on the method (ValueError naming the field and the allowed range)."""
    if spec.method not in METHODS:
        raise ValueError(f"RopeSpec.method must be one of {', '.join(METHODS)}; got {spec.method!r}")
    lower_bounds = {  # field -> (bound, strict): why each bound is there is said in the message
        "rope_theta": (1.0, True, "> 1 (θ ≤ 1 makes the frequencies grow with the dimension index)"),
        "factor": (1.0, False, ">= 1 (1 = no scaling; the target length divided by the original)"),
        "attention_factor": (0.0, True, "> 0 (it multiplies cos and sin)"),
        "beta_fast": (0.0, True, "> 0 (a number of rotations over the original context)"),
        "beta_slow": (0.0, True, "> 0 (a number of rotations over the original context)"),
        "mscale": (0.0, False, ">= 0"),
        "mscale_all_dim": (0.0, False, ">= 0"),
        "low_freq_factor": (0.0, True, "> 0"),
        "high_freq_factor": (0.0, True, "> 0"),
    }
    for name, (bound, strict, allowed) in lower_bounds.items():
        value = getattr(spec, name)
        if value is not None and (value <= bound if strict else value < bound):
            raise ValueError(f"RopeSpec.{name} must be {allowed}, got {value}")
    if not 0.0 < spec.partial_rotary_factor <= 1.0:
        raise ValueError(f"RopeSpec.partial_rotary_factor must be in (0, 1] (the rotated fraction of head_dim), "
                         f"got {spec.partial_rotary_factor}")
    l0 = spec.original_max_position_embeddings
    if l0 is not None and l0 < 2:
        raise ValueError(f"RopeSpec.original_max_position_embeddings must be >= 2 (the pretraining context "
                         f"length), got {l0}")
    beta_fast = BETA_FAST if spec.beta_fast is None else spec.beta_fast
    beta_slow = BETA_SLOW if spec.beta_slow is None else spec.beta_slow
    if beta_fast < beta_slow:
        raise ValueError(f"RopeSpec.beta_fast ({beta_fast}) must be >= beta_slow ({beta_slow}); unset they are "
                         f"{BETA_FAST:g} and {BETA_SLOW:g}")
    if (spec.low_freq_factor is not None and spec.high_freq_factor is not None
            and spec.high_freq_factor <= spec.low_freq_factor):
        raise ValueError(f"RopeSpec.high_freq_factor ({spec.high_freq_factor}) must be > low_freq_factor "
                         f"({spec.low_freq_factor}); Llama 3.1 uses 4.0 and 1.0")


def _check_method_fields(spec: RopeSpec) -> None:
    """Required fields are set; fields the method does not read are left at their defaults."""
    method = METHODS[spec.method]
    for name in method.required:
        if getattr(spec, name) is None:
            hint = method.hints.get(name) or _FIELD_NOTES.get(name)
            raise ValueError(f"RopeSpec.{name} is required for method {spec.method!r}" + (f" ({hint})" if hint else ""))
    # L0 is accepted by every method: it is the pretraining length, used by max_position_embeddings()
    allowed = set(method.parameters) | {"method", "rope_theta", "partial_rotary_factor",
                                         "original_max_position_embeddings"}
    for field in dataclasses.fields(spec):
        if field.name not in allowed and getattr(spec, field.name) != field.default:
            raise ValueError(f"RopeSpec.{field.name} is not used by method {spec.method!r}; it reads "
                             f"{', '.join(('rope_theta',) + method.parameters + ('partial_rotary_factor',))}")


# ---------------------------------------------------------------- a spec in a file


# keys of which a transformers rope dict or config.json holds at least one
SPEC_FILE_KEYS = ("rope_type", "type", "rope_theta", "rope_parameters", "rope_scaling", "model_type", "text_config",
                  "max_position_embeddings")


def read_spec(path, field: str = "spec") -> RopeSpec:
    """The RopeSpec in a JSON file: a `record()` (what `ropescale search` writes as best.json), or a
    transformers `rope_parameters` dict / config.json. ValueError naming `field` and the file when it is missing,
    not JSON, or not a valid spec."""
    where = f"`{field}` {str(path)!r}"
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{where} is a directory; give a RopeSpec JSON file (e.g. the best.json of `ropescale "
                         "search`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where} is not a JSON file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a JSON object with the RopeSpec fields, got {type(data).__name__}")
    if not set(data) & {"method", *SPEC_FILE_KEYS}:   # `from_hf` would read any other object as plain RoPE
        raise ValueError(f"{where} holds neither a RopeSpec (method, factor, ...) nor a transformers rope dict or "
                         f"config.json (keys {', '.join(sorted(data)[:5]) or 'none'})")
    try:
        if "method" in data:
            unknown = sorted(set(data) - {f.name for f in dataclasses.fields(RopeSpec)})
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a RopeSpec field")
            return RopeSpec(**data)
        return RopeSpec.from_hf(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {' '.join(str(exc).split())}") from None
