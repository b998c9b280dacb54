"""`apply(model, spec)`: rescale the rotary embedding of any transformers RoPE model, training-free.

No `forward` is replaced. The config's `rope_parameters` and `max_position_embeddings` are rewritten in
transformers' own schema, then every rotary-embedding module recomputes its `inv_freq` and
`attention_scaling` with transformers' init function for that rope type (ropescale's own types are registered
into `ROPE_INIT_FUNCTIONS` first). Dynamic types keep working through transformers' `dynamic_rope_update`,
which fires for any rope type whose name contains "dynamic" (hence our `dynamic_yarn`).
"""

from __future__ import annotations

import dataclasses

import torch

from ropescale.model_info import ModelInfo
from ropescale.rope import METHODS, RopeSpec, frequencies, hf_init_function

# rope types ropescale adds to transformers (name in config.json -> our method)
CUSTOM_ROPE_TYPES = {"dynamic_yarn": "dynamic-yarn"}

# model types whose transformers config accepts only some rope types. Phi3Config.validate_rope allows only
# these, and Phi3Config renames "yarn" to "longrope" when it loads, so a yarn checkpoint would silently change
ALLOWED_ROPE_TYPES: dict[str, tuple[str, ...]] = {"phi3": ("default", "longrope")}


def register_rope_types() -> None:
    """Make transformers understand ropescale's own rope types (idempotent).

    `import ropescale` calls this once transformers' rope registry is imported (the only caller); loading a
    dynamic-yarn checkpoint in plain transformers needs nothing else.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # heavy: only once transformers is in use

    for rope_type, method in CUSTOM_ROPE_TYPES.items():
        ROPE_INIT_FUNCTIONS.setdefault(rope_type, hf_init_function(method))


def _rotary_modules(model) -> list[torch.nn.Module]:
    return [m for m in model.modules()
            if hasattr(m, "inv_freq") and hasattr(m, "rope_type") and hasattr(m, "config")]


def _init_function(module: torch.nn.Module):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # loaded already: the module is a model's

    rope_type = module.config.rope_parameters["rope_type"]
    return module.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]


def _rebuild(module: torch.nn.Module, max_positions: int) -> None:
    """Recompute one rotary module's buffers exactly as its __init__ does, for the new config."""
    rope_type = module.config.rope_parameters["rope_type"]
    device = module.inv_freq.device
    inv_freq, attention_scaling = _init_function(module)(module.config)  # as the module's __init__ calls it
    module.rope_type = rope_type
    module.attention_scaling = attention_scaling
    module.max_seq_len_cached = module.original_max_seq_len = max_positions
    module.register_buffer("inv_freq", inv_freq.to(device), persistent=False)
    module.register_buffer("original_inv_freq", inv_freq.clone().to(device), persistent=False)
    if hasattr(module, "long_inv_freq"):  # longrope caches its long set on first use
        del module.long_inv_freq
    _set_reset_hook(module)


# ---------------------------------------------------------------- the dynamic reset hook


def restore_attention_scaling_on_reset(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook on a dynamic rotary module: put back the attention scale of the original length.

    transformers' `dynamic_rope_update` (modeling_rope_utils.py, 5.24) has a reset branch: when a sequence
    shorter than L0 follows a longer one it restores `inv_freq` to its init value but leaves `attention_scaling`
    at the value of the longer sequence. For `dynamic` the scale is always 1, so nothing is lost; for
    `dynamic_yarn` the scale is 0.1·ln s + 1 and would stay stale. This hook tests the same condition just
    before that branch runs and restores the init scale, so the forward sees consistent cos, sin and scale.
    """
    position_ids = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
    seq_len = int(position_ids.max()) + 1
    if seq_len < module.original_max_seq_len and module.max_seq_len_cached > module.original_max_seq_len:
        module.attention_scaling = module.original_attention_scaling


def _set_reset_hook(module: torch.nn.Module) -> None:
    """(Re)install the reset hook on a dynamic rotary module, or remove it from a static one; idempotent."""
    handle = getattr(module, "_ropescale_reset_hook", None)
    if handle is not None:
        handle.remove()
        module._ropescale_reset_hook = None
    if not isinstance(module.rope_type, str) or "dynamic" not in module.rope_type:
        return
    # the init value, whatever state the module is in now (the init function at seq_len=None)
    module.original_attention_scaling = _init_function(module)(module.config)[1]
    module._ropescale_reset_hook = module.register_forward_pre_hook(
        restore_attention_scaling_on_reset, with_kwargs=True)


def install_dynamic_reset_hook(model) -> int:
    """Install `restore_attention_scaling_on_reset` on every dynamic rotary module of `model`; returns how many.

    `apply()` and `ropescale.models.load_model()` do this; call it yourself after a plain `from_pretrained` of
    a `dynamic-yarn` checkpoint if the model will see a sequence shorter than L0 after a longer one.
    """
    modules = [m for m in _rotary_modules(model) if isinstance(m.rope_type, str) and "dynamic" in m.rope_type]
    for module in modules:
        _set_reset_hook(module)
    return len(modules)


def _check_architecture_allows(info: ModelInfo, spec: RopeSpec) -> None:
    allowed = ALLOWED_ROPE_TYPES.get(info.model_type)
    hf_type = METHODS[spec.method].hf_type
    if allowed is not None and hf_type not in allowed:
        methods = [name for name, m in METHODS.items() if m.hf_type in allowed]
        raise ValueError(f"model type {info.model_type!r} accepts only rope types {', '.join(allowed)} (transformers' "
                         f"{type(info.config).__name__}); method {spec.method!r} is rope type {hf_type!r}: use "
                         f"`method` {' or '.join(methods)}")


def apply(model, spec: RopeSpec):
    """Rescale `model`'s RoPE to `spec`, in place; returns the model. `save_pretrained` then round-trips.

    The spec's `partial_rotary_factor` must match the model's (left at 1.0 it is taken from the model); an L0
    (`original_max_position_embeddings`) it leaves out is the model's.
    """
    if not isinstance(spec, RopeSpec):
        raise TypeError(f"spec must be a ropescale.RopeSpec, got {type(spec).__name__}")
    info = ModelInfo.from_config(model)
    modules = _rotary_modules(model)
    if not modules:
        raise ValueError(f"model {type(model).__name__} has no rotary embedding module that reads "
                         "config.rope_parameters; ropescale cannot patch it")
    if spec.partial_rotary_factor == 1.0 and info.partial_rotary_factor != 1.0:
        spec = dataclasses.replace(spec, partial_rotary_factor=info.partial_rotary_factor)
    elif spec.partial_rotary_factor != info.partial_rotary_factor:
        raise ValueError(f"partial_rotary_factor {spec.partial_rotary_factor} does not match the model's "
                         f"{info.partial_rotary_factor}")
    if spec.original_max_position_embeddings is None:
        spec = dataclasses.replace(spec, original_max_position_embeddings=info.original_max_position_embeddings)
    frequencies(spec, info.head_dim)  # validates head_dim and longrope list lengths against the model
    _check_architecture_allows(info, spec)
    _rewrite_config(info, spec)
    for module in modules:
        _rebuild(module, info.config.max_position_embeddings)
    return model


def _rewrite_config(info: ModelInfo, spec: RopeSpec) -> None:
    """The text config's rope_parameters and max_position_embeddings for `spec`, checked by the architecture's
    own validate_rope (restored as they were when it refuses)."""
    text = info.config
    old = (text.rope_parameters, text.max_position_embeddings)
    params, max_positions = spec.to_hf(info.head_dim), spec.max_position_embeddings()
    if "partial_rotary_factor" in old[0]:  # Phi3Config.validate_rope reads it even when it is 1.0
        params.setdefault("partial_rotary_factor", spec.partial_rotary_factor)
    text.rope_parameters = params
    text.max_position_embeddings = max_positions
    # our `ropescale_*` record keys (lossless round trip) are known, not "unrecognized"
    text.ignore_keys_at_rope_validation = set(getattr(text, "ignore_keys_at_rope_validation", None) or ()) | {
        key for key in text.rope_parameters if key.startswith("ropescale_")}
    try:
        if hasattr(text, "validate_rope"):
            text.validate_rope()  # architecture-specific limits, e.g. Phi3 allows only default/longrope
    except (ValueError, KeyError) as exc:
        text.rope_parameters, text.max_position_embeddings = old
        raise ValueError(f"model type {info.model_type or '?'!r} does not accept method {spec.method!r}: "
                         f"transformers' validate_rope says {type(exc).__name__}: {exc}") from None
    if getattr(text, "original_max_position_embeddings", None) is not None and spec.original_max_position_embeddings:
        # Phi3 keeps L0 at the top level too, and transformers prefers that copy when it loads the config
        text.original_max_position_embeddings = spec.original_max_position_embeddings
