"""`ropescale plan`: what to write and pass to serve a model at a target length with a given method.

Reads config.json only (local directory or Hub id, never weights), derives L0, θ and head_dim, and prints the
spec, the transformers config keys (5.x and legacy 4.x), vLLM flags and llama.cpp flags with GGUF keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ropescale.cli.common import add_spec_file_argument, spec_file
from ropescale.export.runtimes import llamacpp_settings, vllm_settings
from ropescale.model_info import ModelInfo, build_spec
from ropescale.models import read_config_dict
from ropescale.rope import METHODS, RopeSpec, frequencies
from ropescale.rope.methods import default_inv_freq, rotary_dim

HELP = "print the rope config, vLLM flags and llama.cpp flags to run a model at a target length"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local checkpoint directory or Hugging Face Hub id")
    parser.add_argument("--target-length", type=int, default=None, help="context length to reach, in tokens "
                        "(required unless --spec gives it)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--method", default=None, choices=list(METHODS), help="scaling method (default: yarn)")
    add_spec_file_argument(chosen)
    parser.add_argument("--head-dim", type=int, default=None, help="override the head dim read from config.json")
    parser.add_argument("--rope-theta", type=float, default=None, help="the new base θ, for --method abf only")


def plan_spec(info: ModelInfo, method: str, target_length: int, rope_theta: float | None = None) -> RopeSpec:
    """The spec that extends the model from L0 to `target_length` with `method`."""
    l0 = info.original_max_position_embeddings
    if target_length < l0:
        raise ValueError(f"--target-length {target_length} is below the model's original context length L0 = {l0}; "
                         f"it must be >= {l0}")
    if method == "default":
        raise ValueError("--method default does not scale the context; choose one of "
                         + ", ".join(m for m in METHODS if m != "default"))
    if (rope_theta is None) == (method == "abf"):
        raise ValueError("--rope-theta is required with --method abf (the new base, e.g. 1000000) and applies "
                         "to no other method")
    knobs = {}
    if info.rope.method == method:  # re-plan a model already scaled this way: keep its method parameters
        knobs = {name: getattr(info.rope, name) for name in METHODS[method].parameters
                 if name not in ("factor", "original_max_position_embeddings")}
    if method == "longrope" and knobs.get("short_factor") is None:
        raise ValueError("--method longrope needs searched short_factor/long_factor lists; plan can only reuse "
                         "them from a model that already uses longrope")
    return build_spec(info, method, target_length / l0, **knobs, rope_theta=rope_theta)


def _frequency_summary(spec, head_dim: int, seq_len: int) -> str:
    """How many frequency pairs are unchanged, divided by s, or in between, compared with plain RoPE, at
    `seq_len` (the dynamic methods depend on it)."""
    inv_freq, _ = frequencies(spec, head_dim, seq_len)
    ratio = inv_freq / default_inv_freq(spec.rope_theta, rotary_dim(head_dim, spec.partial_rotary_factor))
    unchanged = int(((ratio - 1).abs() < 1e-6).sum())
    divided = int(((ratio * spec.factor - 1).abs() < 1e-6).sum()) if spec.factor > 1 else 0
    return (f"{len(ratio)} pairs vs plain RoPE with the same θ: {unchanged} unchanged, {divided} divided by "
            f"{spec.factor:g}, {len(ratio) - unchanged - divided} in between (at {seq_len} tokens)")


def _gguf_value(value: Any) -> str:
    return f"[{len(value)} values]" if isinstance(value, list) else json.dumps(value)


def run(args: argparse.Namespace) -> int:
    config = read_config_dict(args.model)
    info = ModelInfo.from_config(config, args.head_dim)
    spec = spec_file(args, config, others=("target_length", "rope_theta"))
    if spec is None and args.target_length is None:
        raise ValueError("--target-length is required (or --spec FILE, whose factor gives it)")
    spec = spec or plan_spec(info, args.method or "yarn", args.target_length, args.rope_theta)
    head_dim, n = info.head_dim, args.target_length or info.target_length(spec)
    current = info.rope
    _, attention = frequencies(spec, head_dim, n)
    rope_parameters = spec.to_hf(head_dim)
    legacy_theta, legacy_scaling = spec.to_legacy_hf(head_dim)
    vllm = vllm_settings(spec, n, head_dim)
    llamacpp = llamacpp_settings(spec, n, head_dim, arch=info.model_type or "llama")
    shown = {k: v for k, v in dataclasses.asdict(current).items() if k in ("method", "rope_theta")}
    lines = [
        f"model      {args.model}: rope {shown['method']}, rope_theta {shown['rope_theta']:g}, "
        f"L0 {info.original_max_position_embeddings}, head_dim {head_dim}",
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
