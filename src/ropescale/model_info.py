"""What ropescale reads from a model's config, read in one place: `ModelInfo`, and `build_spec()` from it.

Every command that starts from a model (apply, plan, export, eval, finetune, study) goes through here, so each
rule exists once: a multimodal wrapper's text config carries the rope; head_dim is the config's, else
hidden_size // num_attention_heads; L0 is the current rope's `original_max_position_embeddings` (a model scaled
before), else the config's `max_position_embeddings`.

    info = ModelInfo.from_config(model)          # a model, a transformers config or a config.json dict
    spec = build_spec(info, "yarn", 8.0)         # θ, L0 and the partial rotary factor from the model
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ropescale.rope import METHODS, RopeSpec, frequencies, rotary_dim
from ropescale.rope.hf import config_head_dim, config_value, text_part

# RopeSpec fields a user may set besides method and factor (flags, recipe keys) -> what they are
SPEC_KNOBS = {
    "rope_theta": "the base θ of the spec (default: the model's; for abf, the new base)",
    "attention_factor": "the attention scale on cos and sin (yarn, longrope; default: the method's)",
    "beta_fast": "YaRN ramp: rotations over L0 where interpolation stops (default 32)",
    "beta_slow": "YaRN ramp: rotations over L0 where interpolation is complete (default 1)",
    "low_freq_factor": "llama3: L0 / low_freq_factor is the longest unscaled wavelength (default 1)",
    "high_freq_factor": "llama3: L0 / high_freq_factor is the shortest fully scaled wavelength (default 4)",
}


def text_config(model_or_config):
    """The config that carries the language model's rope (a multimodal wrapper's text config, else the config
    itself), as given: a transformers config object or a config.json dict.

    ValueError when the model has no rotary position embedding, or one per layer type (Gemma 3). A dict is checked
    by building its transformers config class when the model type is known (unknown types pass).
    """
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, Mapping):
        model_type = config.get("model_type")
        # transformers is heavy and a dict rarely needs it: imported only for this check
        from transformers import CONFIG_MAPPING

        from huggingface_hub.errors import StrictDataclassError

        if model_type in CONFIG_MAPPING:
            try:
                built = CONFIG_MAPPING[model_type].from_dict(dict(config))
            except (KeyError, TypeError, ValueError, ArithmeticError, StrictDataclassError) as exc:
                raise ValueError(f"the model's config is not a valid {model_type!r} config for transformers: "
                                 f"{type(exc).__name__}: {exc}") from None
            text_config(built)
        return text_part(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rope = getattr(text, "rope_parameters", None)
    model_type = getattr(config, "model_type", type(config).__name__)
    if not isinstance(rope, dict) or not rope:
        raise ValueError(f"model type {model_type!r} has no rotary position embedding (its config has no "
                         "rope_parameters); ropescale extends RoPE models such as Llama, Mistral, Qwen, Gemma")
    layer_types = set(getattr(text, "layer_types", None) or ())
    if all(isinstance(v, dict) for v in rope.values()) or (layer_types & set(rope)):
        raise ValueError(f"model type {model_type!r} has a per-layer-type rope config ({', '.join(rope)}); "
                         "ropescale does not rescale nested rope_parameters yet")
    return text


@dataclass(frozen=True)
class ModelInfo:
    """The facts of one model that scaling its rope depends on, read from its config by `from_config`.

    config: the text config (see `text_config`); rope: the rope it runs with now; L0: the length it was
    pretrained at (see the module docstring).
    """

    config: Any
    model_type: str | None
    head_dim: int
    original_max_position_embeddings: int
    rope: RopeSpec

    @classmethod
    def from_config(cls, model_or_config, head_dim: int | None = None) -> ModelInfo:
        """From a model, a transformers config or a config.json dict; `head_dim` overrides the config's.

        ValueError when the model has no usable RoPE, no length, no head_dim, or a saved rope that cannot run at
        its head_dim (longrope lists of the wrong length).
        """
        text = text_config(model_or_config)
        rope = RopeSpec.from_hf(text)
        l0 = rope.original_max_position_embeddings or config_value(text, "max_position_embeddings")
        if not l0:
            raise ValueError("the model's config has no max_position_embeddings (its original context length)")
        if isinstance(l0, bool) or not isinstance(l0, (int, float)) or l0 < 2 or l0 != int(l0):
            raise ValueError(f"the model's config gives its context length as {l0!r}; max_position_embeddings (and "
                             "original_max_position_embeddings) must be an integer >= 2")
        head_dim = head_dim or config_head_dim(text)
        if not head_dim:
            raise ValueError("`head_dim`: the model's config has neither head_dim nor hidden_size and "
                             "num_attention_heads; give `head_dim`")
        frequencies(rope, int(head_dim))
        return cls(text, config_value(text, "model_type"), int(head_dim), int(l0), rope)

    @property
    def rope_theta(self) -> float:
        return self.rope.rope_theta

    @property
    def partial_rotary_factor(self) -> float:
        return self.rope.partial_rotary_factor

    @property
    def rotary_dim(self) -> int:
        return rotary_dim(self.head_dim, self.partial_rotary_factor)

    def max_position_embeddings(self, spec: RopeSpec | None = None) -> int:
        """`spec.max_position_embeddings()` (default: the rope the model runs with now), with this model's L0 when
        the spec names none (default, linear and dynamic ropes are saved without it)."""
        spec = spec or self.rope
        if spec.original_max_position_embeddings is None:
            spec = dataclasses.replace(spec, original_max_position_embeddings=self.original_max_position_embeddings)
        return spec.max_position_embeddings()

    def target_length(self, spec: RopeSpec | None = None) -> int:
        """L0·factor of `spec` (default: the rope the model runs with now): the length it is scaled to."""
        spec = spec or self.rope
        return int(round((spec.original_max_position_embeddings or self.original_max_position_embeddings)
                         * spec.factor))


def build_spec(info: ModelInfo, method: str, factor: float = 1.0, **knobs) -> RopeSpec:
    """The RopeSpec of `method` at `factor` for this model.

    θ, L0 and the partial rotary factor come from the model, fields a base model cannot provide from the method's
    defaults (`Method.defaults`, e.g. llama3's frequency factors); `knobs` that are not None replace either.
    RopeSpec validates the result (ValueError/TypeError naming the field).
    """
    fields = {**(METHODS[method].defaults if method in METHODS else {}), "rope_theta": info.rope_theta,
              "original_max_position_embeddings": info.original_max_position_embeddings,
              "partial_rotary_factor": info.partial_rotary_factor}
    fields.update((name, value) for name, value in knobs.items() if value is not None)
    return RopeSpec(method=method, factor=factor, **fields)


def check_needs_method(method: str | None, **settings) -> None:
    """ValueError when a spec setting is given (not None) without a method: nothing would read it."""
    given = [name for name, value in settings.items() if value is not None]
    if method is None and given:
        raise ValueError(f"`{given[0]}` needs `method` (the scaling method, e.g. yarn)")


def spec_for_model(model_or_config, method: str | None, factor: float | None = None, **knobs) -> RopeSpec | None:
    """`build_spec` for a model, a transformers config or a config.json dict; None when `method` is None (the
    model runs as saved), which then allows no factor or knob."""
    check_needs_method(method, factor=factor, **knobs)
    if method is None:
        return None
    return build_spec(ModelInfo.from_config(model_or_config), method, 1.0 if factor is None else factor, **knobs)


def check_spec_fits(info: ModelInfo, spec: RopeSpec, field: str = "spec") -> RopeSpec:
    """`spec` (read from a file) for this model: ValueError naming `field` when it was made for another L0 or θ
    (abf sets its own θ); an L0 it leaves out, and its partial rotary factor left at 1.0, are taken from the
    model. Returns the spec."""
    l0 = info.original_max_position_embeddings
    if spec.original_max_position_embeddings not in (None, l0):
        raise ValueError(f"`{field}` was made for L0 = {spec.original_max_position_embeddings}, but the model's "
                         f"original context length is {l0}")
    spec = dataclasses.replace(spec, original_max_position_embeddings=l0)
    if spec.method != "abf" and spec.rope_theta != info.rope_theta:
        raise ValueError(f"`{field}` has rope_theta {spec.rope_theta:g}, but the model's is {info.rope_theta:g}")
    if spec.partial_rotary_factor == 1.0 and info.partial_rotary_factor != 1.0:
        spec = dataclasses.replace(spec, partial_rotary_factor=info.partial_rotary_factor)
    frequencies(spec, info.head_dim)  # longrope lists must hold one factor per rotary pair of this model
    return spec
