"""vLLM and llama.cpp settings for a `RopeSpec`: pure functions from (spec, max_len) to flags and metadata.

Sources: /work/shared/reference/interop-hf-vllm-llamacpp.md (vLLM 0.33.0 `get_rope` and `_get_and_verify_max_len`,
llama.cpp 0c1e57098 `common/arg.cpp`, `llama-context.cpp`, `convert_hf_to_gguf.py`). Neither runtime has
dynamic scaling that matches transformers, so `dynamic` and `dynamic-yarn` are served as their static value at
`max_len`, and every such loss is listed in `lossy`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from typing import Any

from ropescale.rope.hf import PREFIX
from ropescale.rope.methods import (
    BETA_FAST,
    BETA_SLOW,
    default_inv_freq,
    dynamic_theta,
    frequencies,
    rotary_dim,
    yarn_attention_factor,
    yarn_get_mscale,
)
from ropescale.rope.spec import RopeSpec


def _num(value: float) -> str:
    """A flag value: integers without '.0', other floats in full precision."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def static_rope_parameters(spec: RopeSpec, max_len: int, head_dim: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The `rope_parameters` a static runtime should use to serve `spec` up to `max_len`, and what that loses.

    `dynamic` becomes `default` with the dynamic base at `max_len` (the export recipe in the interop reference
    §5.3, as llama.cpp's HunYuan converter does); `dynamic-yarn` becomes `yarn` with s = max(1, max_len/L0);
    every other method is its `to_hf()` dict without the `ropescale_` provenance keys.
    """
    lossy: list[str] = []
    if spec.method == "dynamic":
        if head_dim is None:
            raise ValueError("head_dim is needed to export method 'dynamic' (its base depends on the rotary dim)")
        dim = rotary_dim(head_dim, spec.partial_rotary_factor)
        theta = dynamic_theta(spec.rope_theta, spec.factor, spec.original_max_position_embeddings, max_len, dim)
        spec = RopeSpec(method="default", rope_theta=theta, partial_rotary_factor=spec.partial_rotary_factor)
        lossy.append(f"dynamic NTK is served statically with its base at {max_len} tokens (θ' = {theta:.6g}); "
                     "shorter sequences also use that base (no runtime recomputes it)")
    elif spec.method == "dynamic-yarn":
        scale = max(1.0, max_len / spec.original_max_position_embeddings)
        spec = dataclasses.replace(spec, method="yarn", factor=scale)
        lossy.append(f"dynamic YaRN is served as static YaRN with s = {scale:g} (its value at {max_len} tokens); "
                     "shorter sequences also use it")
    params = {k: v for k, v in spec.to_hf(head_dim).items() if not k.startswith(PREFIX)}
    return params, lossy


def _vllm_max_position_embeddings(params: dict[str, Any], max_len: int) -> int:
    # vLLM 0.33 multiplies max_position_embeddings by `factor` for every type except yarn/llama3/longrope
    # (`_get_and_verify_max_len`), so for linear/dynamic the value must be the length before scaling
    if params["rope_type"] in ("yarn", "llama3", "longrope"):
        return max_len
    return math.ceil(max_len / params.get("factor", 1.0))


def vllm_settings(spec: RopeSpec, max_len: int, head_dim: int | None = None) -> dict[str, Any]:
    """vLLM ≥ 0.33 settings: `hf_overrides`, `max_model_len`, the CLI `flags`, and `lossy` notes.

    vLLM replaces the whole `rope_parameters` dict with the override (no re-standardisation), so the dict is
    complete: rope_type, rope_theta, L0 and partial_rotary_factor where they apply.
    """
    params, lossy = static_rope_parameters(spec, max_len, head_dim)
    overrides = {"rope_parameters": params,
                 "max_position_embeddings": _vllm_max_position_embeddings(params, max_len)}
    if params["rope_type"] == "longrope":
        if spec.attention_factor is not None or not math.isclose(
                spec.factor, max_len / spec.original_max_position_embeddings):
            lossy.append("vLLM's longrope ignores factor and attention_factor: its attention scale comes from "
                         "max_position_embeddings / original_max_position_embeddings")
        lossy.append("vLLM picks longrope's long or short factors once per engine (max_model_len > L0), not per "
                     "sequence")
    flags = ["--hf-overrides", json.dumps(overrides), "--max-model-len", str(max_len)]
    return {"hf_overrides": overrides, "max_model_len": max_len, "flags": flags,
            "command": " ".join(shlex.quote(f) for f in flags), "lossy": lossy}


# ---------------------------------------------------------------- llama.cpp

# transformers model_type -> llama.cpp architecture name (GGUF key prefix), where they differ
# (convert_hf_to_gguf.py maps Mistral to the llama arch and GPT-NeoX to gptneox)
GGUF_ARCH = {"mistral": "llama", "gpt_neox": "gptneox"}


def gguf_arch(model_type: str | None) -> str:
    """The GGUF architecture prefix of a transformers `model_type` (llama when unknown)."""
    return GGUF_ARCH.get(model_type, model_type or "llama")


def _llamacpp_default(spec, params, head_dim, arch):
    return ["--rope-freq-base", _num(params["rope_theta"])], {f"{arch}.rope.scaling.type": "none"}, []


def _llamacpp_linear(spec, params, head_dim, arch):
    flags = ["--rope-scaling", "linear", "--rope-scale", _num(params["factor"])]
    gguf = {f"{arch}.rope.scaling.type": "linear", f"{arch}.rope.scaling.factor": params["factor"]}
    return flags, gguf, []


def _llamacpp_yarn(spec, params, head_dim, arch):
    factor, l0 = params["factor"], params["original_max_position_embeddings"]
    flags = ["--rope-scaling", "yarn", "--rope-scale", _num(factor), "--yarn-orig-ctx", str(l0)]
    gguf = {f"{arch}.rope.scaling.type": "yarn", f"{arch}.rope.scaling.factor": factor,
            f"{arch}.rope.scaling.original_context_length": l0}
    lossy = []
    for key, flag, builtin_beta in (("beta_fast", "--yarn-beta-fast", BETA_FAST),
                                    ("beta_slow", "--yarn-beta-slow", BETA_SLOW)):
        if params.get(key, builtin_beta) != builtin_beta:  # generic archs read beta only from the command line
            flags += [flag, _num(params[key])]
    if params.get("truncate") is False:
        lossy.append("llama.cpp always floors/ceils the YaRN correction range: truncate=False is lost")
    wanted = yarn_attention_factor(factor, params.get("attention_factor"), params.get("mscale"),
                                   params.get("mscale_all_dim"))
    builtin = yarn_get_mscale(factor)  # llama.cpp's generic YaRN magnitude, whatever the flags say
    if not math.isclose(wanted, builtin, rel_tol=1e-7):
        gguf[f"{arch}.rope.scaling.attn_factor"] = wanted / builtin
        lossy.append(f"attention scale {wanted:.6g} differs from llama.cpp's built-in 0.1·ln s + 1 = {builtin:.6g}; "
                     "no flag sets it (--yarn-attn-factor is overwritten when YaRN is on): only the GGUF key "
                     f"{arch}.rope.scaling.attn_factor = {wanted / builtin:.6g} carries it (derived from llama.cpp's "
                     "code, not tested end to end)")
    return flags, gguf, lossy


def _llamacpp_llama3(spec, params, head_dim, arch):
    lossy = ["llama.cpp has no llama3 flag: the scaling lives in the GGUF tensor rope_freqs.weight "
             "(convert_hf_to_gguf.py writes it from config.json)"]
    gguf = {f"{arch}.rope.scaling.type": "none"}
    if head_dim is not None:  # rope_freqs divides each frequency: θ_i / rope_freqs_i
        dim = rotary_dim(head_dim, spec.partial_rotary_factor)
        scaled, _ = frequencies(spec, head_dim)
        gguf["rope_freqs.weight"] = (default_inv_freq(spec.rope_theta, dim) / scaled).tolist()
    return [], gguf, lossy


def _llamacpp_longrope(spec, params, head_dim, arch):
    l0 = params["original_max_position_embeddings"]
    _, attention = frequencies(spec, head_dim) if head_dim is not None else (None, None)
    gguf = {f"{arch}.rope.scaling.type": "longrope", f"{arch}.rope.scaling.original_context_length": l0,
            "rope_factors_short.weight": params["short_factor"], "rope_factors_long.weight": params["long_factor"]}
    if attention is not None:
        gguf[f"{arch}.rope.scaling.attn_factor"] = attention
    lossy = ["llama.cpp has no longrope flag: it needs the GGUF keys and tensors (convert_hf_to_gguf.py)",
             "llama.cpp picks long or short factors once per context (-c > L0), not per sequence"]
    return [], gguf, lossy


_LLAMACPP = {"default": _llamacpp_default, "linear": _llamacpp_linear, "yarn": _llamacpp_yarn,
             "llama3": _llamacpp_llama3, "longrope": _llamacpp_longrope}


def llamacpp_settings(spec: RopeSpec, max_len: int, head_dim: int | None = None,
                      arch: str = "llama") -> dict[str, Any]:
    """llama.cpp settings: CLI `flags`, `gguf` metadata (keys with the `{arch}.` prefix; tensors as lists) and
    `lossy` notes for what llama.cpp cannot express.

    linear → `--rope-scaling linear --rope-scale s`; yarn/ntk-by-parts → `--rope-scaling yarn --rope-scale s
    --yarn-orig-ctx L0`; ntk/abf (and static dynamic) → `--rope-freq-base θ'`; llama3/longrope → GGUF only.
    `-c max_len` always, and `context_length` = max_len, because llama-server caps each slot at it.
    """
    params, lossy = static_rope_parameters(spec, max_len, head_dim)
    flags, gguf, more = _LLAMACPP[params["rope_type"]](spec, params, head_dim, arch)
    gguf = {f"{arch}.context_length": max_len, f"{arch}.rope.freq_base": params["rope_theta"], **gguf}
    if head_dim is not None:
        gguf[f"{arch}.rope.dimension_count"] = rotary_dim(head_dim, spec.partial_rotary_factor)
    return {"flags": flags + ["-c", str(max_len)], "gguf": gguf, "lossy": lossy + more}

