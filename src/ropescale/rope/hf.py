"""Conversion between `RopeSpec` and transformers' `rope_parameters`, and a transformers init function.

The dict `to_hf()` writes loads in plain transformers 5 (and vLLM) without ropescale installed:

- each method is written as its `hf_type` (see `METHODS`): native where transformers has the method,
  else its exact equivalent (`ntk`, `abf` → `default` with the new θ; `ntk-by-parts` → `yarn` with
  `attention_factor=1.0`) or, for `dynamic-yarn`, the custom type `dynamic_yarn`;
- a value the native type does not read is kept under a `ropescale_` prefix (for `ntk`: `ropescale_method`,
  `ropescale_rope_theta` = the original θ, `ropescale_factor`; L0 for linear/dynamic/default as
  `ropescale_original_max_position_embeddings`), so that `from_hf(to_hf())` is lossless.
  transformers 5.24 keeps such keys through save/load and only logs one warning line per config
  ("Unrecognized keys in `rope_parameters`"); it never errors on them. Runtimes (vLLM, llama.cpp) ignore them,
  and `ropescale.export.runtimes` leaves them out of command lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ropescale.rope.methods import METHODS, frequencies, ntk_theta, rotary_dim
from ropescale.rope.spec import RopeSpec

PREFIX = "ropescale_"

# keys each transformers rope_type reads (its validator's required ∪ optional keys, transformers 5.24);
# dynamic_yarn is ours and reads what yarn reads
_YARN_KEYS = {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
              "mscale", "mscale_all_dim", "truncate"}
HF_KEYS: dict[str, frozenset[str]] = {
    hf_type: frozenset({"rope_theta", "partial_rotary_factor"} | keys) for hf_type, keys in {
        "default": set(),
        "linear": {"factor"},
        "dynamic": {"factor"},
        "yarn": _YARN_KEYS,
        "dynamic_yarn": _YARN_KEYS,
        "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"},
        "longrope": {"factor", "original_max_position_embeddings", "attention_factor", "short_factor",
                     "long_factor"},
    }.items()}

# rope_type (native, legacy or vLLM's) -> our method, for dicts without a `ropescale_method` record
HF_TYPE_TO_METHOD = {"default": "default", "linear": "linear", "dynamic": "dynamic", "yarn": "yarn",
                     "dynamic_yarn": "dynamic-yarn", "llama3": "llama3", "longrope": "longrope",
                     "su": "longrope",  # Phi-3's legacy name
                     "ntk": "ntk"}      # vLLM's static NTK type: θ·s^(d/(d−2)), same as ours


def _native_overrides(spec: RopeSpec, head_dim: int | None) -> dict[str, Any]:
    """Values the native type needs instead of ours, for methods exported as an equivalent."""
    if spec.method == "ntk":
        if head_dim is None:
            raise ValueError("to_hf(head_dim=...) is needed for method 'ntk': its native base θ·s^(d/(d−2)) "
                             "depends on the rotary dim d")
        return {"rope_theta": ntk_theta(spec.rope_theta, spec.factor,
                                        rotary_dim(head_dim, spec.partial_rotary_factor))}
    if spec.method == "ntk-by-parts":
        return {"attention_factor": 1.0}
    return {}


def spec_to_hf(spec: RopeSpec, head_dim: int | None = None) -> dict[str, Any]:
    """`config.rope_parameters` for `spec`: always `rope_type` and `rope_theta`, and L0 where the type uses it."""
    method = METHODS[spec.method]
    native_keys = HF_KEYS[method.hf_type]
    params: dict[str, Any] = {"rope_type": method.hf_type}
    fields = ("rope_theta",) + method.parameters + ("original_max_position_embeddings", "partial_rotary_factor")
    for name in dict.fromkeys(fields):  # ordered, without duplicates
        value = getattr(spec, name)
        if value is None or (name == "partial_rotary_factor" and value == 1.0):
            continue
        params[name if name in native_keys else PREFIX + name] = list(value) if isinstance(value, tuple) else value
    if HF_TYPE_TO_METHOD[method.hf_type] != spec.method:  # written as an equivalent: record what it was
        for key, value in _native_overrides(spec, head_dim).items():
            if key in params and params[key] != value:
                params[PREFIX + key] = params[key]
            params[key] = value
        params[PREFIX + "method"] = spec.method
    return params


# ---------------------------------------------------------------- from_hf


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PreTrainedConfig
        return config.to_dict()
    raise TypeError(f"from_hf expects a transformers config, a config.json dict or a rope_parameters dict, "
                    f"got {type(config).__name__}")


def _is_nested(rope: Mapping[str, Any]) -> bool:
    return bool(rope) and all(isinstance(v, Mapping) or v is None for v in rope.values())


# ---------------------------------------------------------------- reading a config (dict or transformers object)


def config_value(config: Any, key: str) -> Any:
    """`config[key]` of a config.json dict or `config.key` of a transformers config; None when absent."""
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def config_head_dim(config: Any) -> int | None:
    """The config's `head_dim`, else hidden_size // num_attention_heads (as transformers computes it); None when
    neither is there."""
    if config_value(config, "head_dim"):
        return int(config_value(config, "head_dim"))
    if config_value(config, "hidden_size") and config_value(config, "num_attention_heads"):
        return int(config_value(config, "hidden_size")) // int(config_value(config, "num_attention_heads"))
    return None


def text_part(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A multimodal wrapper's `text_config` (the language model's, which carries the rope), else the config.

    A dict is a wrapper when it has a `text_config` dict and no rope key of its own (Llava, Idefics); transformers
    objects say it themselves (`get_text_config()`).
    """
    inner = config.get("text_config")
    own = ("rope_parameters", "rope_scaling", "rope_theta")
    return inner if isinstance(inner, Mapping) and not any(key in config for key in own) else config


# model types whose configs spell the legacy keys differently: transformers 5's GPTNeoXConfig takes θ and the
# rotary fraction from these names, not from top-level rope_theta/partial_rotary_factor, when rope_scaling is set
LEGACY_ALIASES: dict[str, dict[str, str]] = {
    "gpt_neox": {"rope_theta": "rotary_emb_base", "partial_rotary_factor": "rotary_pct"},
}


def _standardize(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rope dict, config) as transformers 5 standardizes a config.json: legacy `rope_scaling` wins, top-level
    `rope_theta`/`partial_rotary_factor` (or their `LEGACY_ALIASES`) move in, L0 of llama3/yarn/longrope defaults
    to max_position_embeddings."""
    if "rope_type" in config or "type" in config:  # the rope dict itself
        return dict(config), {}
    if _is_nested(config):
        raise ValueError(f"nested per-layer-type rope_parameters (keys {sorted(config)}, as in Gemma 3) are not "
                         "supported: ropescale scales one RoPE per model")
    if text_part(config) is not config:
        return _standardize(dict(text_part(config)))
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(rope, Mapping):
        raise ValueError(f"rope_parameters must be a dict, got {rope!r}")
    if _is_nested(rope):
        raise ValueError(f"nested per-layer-type rope_parameters (keys {sorted(rope)}, as in Gemma 3) are not "
                         "supported: ropescale scales one RoPE per model")
    rope = dict(rope)
    for key, alias in LEGACY_ALIASES.get(config.get("model_type"), {}).items():
        if config.get(key) is None and config.get(alias) is not None:
            config = {**config, key: config[alias]}
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    if config.get("partial_rotary_factor") is not None:
        rope.setdefault("partial_rotary_factor", config["partial_rotary_factor"])
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type == "su":  # Phi-3's legacy name, remapped by Phi3Config before standardisation
        rope_type = rope["rope_type"] = "longrope"
    max_pos = config.get("max_position_embeddings")
    if rope_type in ("llama3", "yarn", "longrope"):
        if config.get("original_max_position_embeddings"):  # Phi-3 keeps L0 at top level; transformers prefers it
            rope["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        elif max_pos is not None:
            rope.setdefault("original_max_position_embeddings", max_pos)
    if rope_type in ("yarn", "longrope") and rope.get("factor") is None and max_pos \
            and rope.get("original_max_position_embeddings"):
        rope["factor"] = max_pos / rope["original_max_position_embeddings"]  # transformers' own fallback
    if rope_type == "dynamic" and max_pos is not None:  # transformers' dynamic NTK treats it as L0
        rope.setdefault(PREFIX + "original_max_position_embeddings", max_pos)
    return rope, config


def spec_from_hf(config: Any) -> RopeSpec:
    """The `RopeSpec` of a transformers config, a config.json dict (v5 `rope_parameters`, or legacy `rope_theta`
    + `rope_scaling` with `type`/`rope_type`), or a `rope_parameters` dict.

    Keys under the `ropescale_` prefix override the native ones (they hold the values of methods exported as
    an equivalent). A nested per-layer-type dict (Gemma 3) raises ValueError.
    """
    rope, full_config = _standardize(_as_dict(config))
    if _is_nested(rope):
        raise ValueError(f"nested per-layer-type rope_parameters (keys {sorted(rope)}) are not supported")
    hf_type = rope.get("rope_type") or rope.get("type") or "default"
    recorded = rope.get(PREFIX + "method")
    if recorded is not None and (not isinstance(recorded, str) or recorded not in METHODS):
        raise ValueError(f"rope_parameters[{PREFIX + 'method'!r}] must be a string naming a ropescale method "
                         f"({', '.join(METHODS)}), got {recorded!r}")
    name = recorded or (HF_TYPE_TO_METHOD.get(hf_type) if isinstance(hf_type, str) else None)
    if name is None:
        raise ValueError(f"rope_type {hf_type!r} is not supported; rope_type must be one of "
                         f"{', '.join(HF_TYPE_TO_METHOD)}")
    method = METHODS[name]
    wanted = ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings") + method.parameters
    values = {}
    for key in wanted:
        value = rope.get(PREFIX + key, rope.get(key))
        if value is not None:
            values[key] = value
    if name == "longrope" and "factor" not in values:
        raise ValueError("a longrope rope_parameters dict without factor: pass the whole config (transformers then "
                         "uses max_position_embeddings / original_max_position_embeddings)")
    l0 = values.get("original_max_position_embeddings")
    if isinstance(l0, float) and l0.is_integer():  # JSON written by some tools: 4096.0
        values["original_max_position_embeddings"] = int(l0)
    spec = RopeSpec(method=name, **values)
    if PREFIX + "method" in rope:
        _check_equivalent_unchanged(spec, rope, config_head_dim(full_config))
    return spec


def _check_equivalent_unchanged(spec: RopeSpec, rope: Mapping[str, Any], head_dim: int | None) -> None:
    """A dict exported as an equivalent must still say what its `ropescale_` record says (else it was edited)."""
    if spec.method == "ntk" and head_dim is None:
        return  # θ' depends on the rotary dim, unknown from the rope dict alone
    expected = spec_to_hf(spec, head_dim)
    for key, value in expected.items():
        if key.startswith(PREFIX) or key not in rope:
            continue
        same = math.isclose(rope[key], value, rel_tol=1e-9) if _is_number(value) else rope[key] == value
        if not same:
            raise ValueError(f"rope_parameters[{key!r}] = {rope[key]!r} but its ropescale_ record ({spec!r}) "
                             f"gives {value!r}: the dict was edited after export; drop the ropescale_ keys to "
                             "use the native values as they are")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- transformers init function


def hf_init_function(method: str) -> Callable[..., tuple[torch.Tensor, float]]:
    """A transformers rope init function for `method`, for `ROPE_INIT_FUNCTIONS[METHODS[method].hf_type]`.

    Signature as transformers' `_compute_*_parameters`: `(config, device=None, seq_len=None, layer_type=None)
    -> (inv_freq, attention_factor)`, computed by `frequencies()` on `RopeSpec.from_hf(config)`. Registering
    `dynamic_yarn` is one line: `ROPE_INIT_FUNCTIONS["dynamic_yarn"] = hf_init_function("dynamic-yarn")`.
    `seq_len` may be a tensor (transformers' dynamic update passes `max(position_ids) + 1`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")

    def compute_parameters(config: Any, device: torch.device | str | None = None,
                           seq_len: int | torch.Tensor | None = None,
                           layer_type: str | None = None) -> tuple[torch.Tensor, float]:
        rope = config.rope_parameters if layer_type is None else config.rope_parameters[layer_type]
        spec = spec_from_hf({"rope_parameters": dict(rope),
                             "max_position_embeddings": getattr(config, "max_position_embeddings", None)})
        if spec.method != method:
            raise ValueError(f"this init function computes {method!r}, but the config describes {spec!r}")
        head_dim = config_head_dim(config)
        length = None if seq_len is None else int(seq_len)
        # from_pretrained builds the model under a meta default device, where frequencies()'s finiteness check
        # cannot read values: compute on the CPU, then hand back a tensor where transformers' own init
        # functions would put it (meta there; transformers' _init_weights calls us again once weights load)
        with torch.device("cpu"):
            inv_freq, attention_factor = frequencies(spec, head_dim, length)
        return inv_freq.to(device if device is not None else torch.get_default_device()), attention_factor

    compute_parameters.__name__ = f"_compute_{METHODS[method].hf_type}_parameters"
    compute_parameters.__doc__ = f"ropescale's {method!r} for transformers: {METHODS[method].description}."
    return compute_parameters
