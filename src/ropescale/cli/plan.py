"""`ropescale plan`: what to write and pass to serve a model at a target length with a given method.

Reads config.json only (local directory or Hub id, never weights), derives L0, θ and head_dim, and prints the
spec, the transformers config keys (5.x and legacy 4.x), vLLM flags and llama.cpp flags with GGUF keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

HELP = "print the rope config, vLLM flags and llama.cpp flags to run a model at a target length"

# defaults for method parameters a base model cannot provide (Llama 3.1's published values)
_METHOD_DEFAULTS = {"llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ropescale.rope import METHODS

    parser.add_argument("--model", required=True, help="local checkpoint directory or Hugging Face Hub id")
    parser.add_argument("--target-length", type=int, required=True, help="context length to reach, in tokens")
    parser.add_argument("--method", default="yarn", choices=list(METHODS), help="scaling method (default: yarn)")
    parser.add_argument("--head-dim", type=int, default=None, help="override the head dim read from config.json")
    parser.add_argument("--rope-theta", type=float, default=None, help="the new base θ, for --method abf only")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config of a multimodal wrapper, else the config itself."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) and "max_position_embeddings" not in config else config


def _check_rotary(config: dict[str, Any]) -> None:
    """ValueError when a model type transformers knows has no RoPE (GPT-2, OPT, MPT...): its config class, built
    from the dict, has no rope_parameters. Unknown model types pass (plan reads only the dict)."""
    from transformers import CONFIG_MAPPING

    from ropescale.patch import rope_config

    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        rope_config(CONFIG_MAPPING[model_type].from_dict(config))


def derive(config: dict[str, Any], head_dim: int | None = None) -> dict[str, Any]:
    """L0, θ, head_dim, partial_rotary_factor and the model's current spec, from a config.json dict."""
    from ropescale.rope import RopeSpec, frequencies

    _check_rotary(config)
    current = RopeSpec.from_hf(config)
    text = _text_config(config)
    l0 = current.original_max_position_embeddings or text.get("max_position_embeddings")
    if not l0:
        raise ValueError("--model: config.json has no max_position_embeddings (the original context length)")
    if head_dim is None:
        head_dim = text.get("head_dim") or (
            text["hidden_size"] // text["num_attention_heads"]
            if text.get("hidden_size") and text.get("num_attention_heads") else None)
    if not head_dim:
        raise ValueError("--head-dim: config.json has neither head_dim nor hidden_size/num_attention_heads; "
                         "pass --head-dim")
    frequencies(current, int(head_dim))  # a saved spec that cannot run at this head_dim (longrope lists) fails here
    return {"current": current, "original_max_position_embeddings": int(l0), "rope_theta": current.rope_theta,
            "head_dim": int(head_dim), "partial_rotary_factor": current.partial_rotary_factor}


def build_spec(derived: dict[str, Any], method: str, target_length: int, rope_theta: float | None = None):
    """The spec that extends the model from L0 to `target_length` with `method`."""
    from ropescale.rope import METHODS, RopeSpec

    l0 = derived["original_max_position_embeddings"]
    if target_length < l0:
        raise ValueError(f"--target-length {target_length} is below the model's original context length L0 = {l0}; "
                         f"it must be >= {l0}")
    if method == "default":
        raise ValueError("--method default does not scale the context; choose one of "
                         + ", ".join(m for m in METHODS if m != "default"))
    if (rope_theta is None) == (method == "abf"):
        raise ValueError("--rope-theta is required with --method abf (the new base, e.g. 1000000) and applies "
                         "to no other method")
    current = derived["current"]
    fields = dict(_METHOD_DEFAULTS.get(method, {}))
    if current.method == method:  # re-plan a model already scaled this way: keep its method parameters
        fields.update({name: getattr(current, name) for name in METHODS[method].parameters
                       if getattr(current, name) is not None})
    if method == "longrope" and "short_factor" not in fields:
        raise ValueError("--method longrope needs searched short_factor/long_factor lists; plan can only reuse "
                         "them from a model that already uses longrope")
    fields.update(method=method, rope_theta=rope_theta or derived["rope_theta"], factor=target_length / l0,
                  original_max_position_embeddings=l0, partial_rotary_factor=derived["partial_rotary_factor"])
    return RopeSpec(**fields)


def _frequency_summary(spec, head_dim: int, seq_len: int) -> str:
    """How many frequency pairs are unchanged, divided by s, or in between, compared with plain RoPE, at
    `seq_len` (the dynamic methods depend on it)."""
    from ropescale.rope import frequencies
    from ropescale.rope.methods import default_inv_freq, rotary_dim

    inv_freq, _ = frequencies(spec, head_dim, seq_len)
    ratio = inv_freq / default_inv_freq(spec.rope_theta, rotary_dim(head_dim, spec.partial_rotary_factor))
    unchanged = int(((ratio - 1).abs() < 1e-6).sum())
    divided = int(((ratio * spec.factor - 1).abs() < 1e-6).sum()) if spec.factor > 1 else 0
    return (f"{len(ratio)} pairs vs plain RoPE with the same θ: {unchanged} unchanged, {divided} divided by "
            f"{spec.factor:g}, {len(ratio) - unchanged - divided} in between (at {seq_len} tokens)")


def _gguf_value(value: Any) -> str:
    return f"[{len(value)} values]" if isinstance(value, list) else json.dumps(value)


def run(args: argparse.Namespace) -> int:
    from ropescale.models import read_config_dict
    from ropescale.export.runtimes import llamacpp_settings, vllm_settings
    from ropescale.rope import frequencies

    config = read_config_dict(args.model)
    derived = derive(config, args.head_dim)
    spec = build_spec(derived, args.method, args.target_length, args.rope_theta)
    head_dim, n = derived["head_dim"], args.target_length
    current = derived["current"]
    _, attention = frequencies(spec, head_dim, n)
    rope_parameters = spec.to_hf(head_dim)
    legacy_theta, legacy_scaling = spec.to_legacy_hf(head_dim)
    vllm = vllm_settings(spec, n, head_dim)
    llamacpp = llamacpp_settings(spec, n, head_dim, arch=_text_config(config).get("model_type", "llama"))
    shown = {k: v for k, v in dataclasses.asdict(current).items() if k in ("method", "rope_theta")}
    lines = [
        f"model      {args.model}: rope {shown['method']}, rope_theta {shown['rope_theta']:g}, "
        f"L0 {derived['original_max_position_embeddings']}, head_dim {head_dim}",
        f"target     {n} tokens = {spec.factor:g} x L0 with {spec.method}",
        f"spec       {spec!r}",
        f"attention  scale {attention:.6g} on cos and sin (attention logits x {attention ** 2:.6g})",
        f"frequency  {_frequency_summary(spec, head_dim, n)}",
        "",
        "transformers 5 config.json:",
        f'  "rope_parameters": {json.dumps(rope_parameters)}',
        f'  "max_position_embeddings": {spec.max_position_embeddings()}',
        "transformers 4.x config.json (write these too, so both versions load it alike):",
        f'  "rope_theta": {json.dumps(legacy_theta)}',
        f'  "rope_scaling": {json.dumps(legacy_scaling)}',
        "",
        "vLLM:",
        f"  vllm serve {args.model} {vllm['command']}",
        *(f"  lost: {note}" for note in vllm["lossy"]),
        "",
        "llama.cpp:",
        f"  llama-server -m model.gguf {' '.join(llamacpp['flags'])}",
        "  GGUF metadata: " + ", ".join(f"{k} = {_gguf_value(v)}" for k, v in llamacpp["gguf"].items()),
        *(f"  lost: {note}" for note in llamacpp["lossy"]),
    ]
    print("\n".join(lines))
    return 0
