"""Hugging Face checkpoint directories that runtimes load as they are: `save_extended()` and `hf_config_keys()`.

The config.json carries both rope schemas (interop reference §5.1): transformers 5's `rope_parameters` (with
`rope_theta` inside) and the legacy top-level `rope_theta` + `rope_scaling` that transformers 4.x reads (5.x
gives `rope_scaling` precedence when both are present, so the two say exactly the same thing).
`original_max_position_embeddings` is always written for the types that read it, so transformers never fills
it from the extended `max_position_embeddings` (reference §1.4, "Gotcha").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ropescale
from ropescale.model_info import ModelInfo, text_config
from ropescale.patch import CUSTOM_ROPE_TYPES
from ropescale.rope import METHODS, RopeSpec
from ropescale.rope.hf import LEGACY_ALIASES


def needs_ropescale(spec: RopeSpec) -> bool:
    """Whether loading a checkpoint of `spec` needs `import ropescale` (its rope type is not transformers')."""
    return METHODS[spec.method].hf_type in CUSTOM_ROPE_TYPES


def loading_note(spec: RopeSpec) -> str:
    """One sentence on what loading the exported checkpoint needs."""
    if needs_ropescale(spec):
        return (f"rope type {METHODS[spec.method].hf_type!r} is ropescale's own: run `import ropescale` before "
                "from_pretrained (it registers the type with transformers); vLLM and llama.cpp cannot load it "
                "as it is (see `ropescale export`)")
    return "loads with plain transformers (4.x or 5.x) from_pretrained; no ropescale import needed"


def hf_config_keys(spec: RopeSpec, head_dim: int, model_type: str | None = None,
                   rope_parameters: dict[str, Any] | None = None, *,
                   max_position_embeddings: int | None = None) -> dict[str, Any]:
    """The config.json keys of `spec` in both schemas: rope_parameters, rope_theta, rope_scaling,
    max_position_embeddings (and top-level partial_rotary_factor, and the model type's legacy aliases).

    `rope_parameters` is the dict a patched config already holds (default: `spec.to_hf(head_dim)`); it must
    describe `spec`. The legacy `rope_scaling` is `spec.to_legacy_hf()` plus any extra key of that dict, so
    that the two schemas are identical. `max_position_embeddings` defaults to `spec.max_position_embeddings()`.
    """
    params = dict(rope_parameters) if rope_parameters is not None else spec.to_hf(head_dim)
    theta, scaling = spec.to_legacy_hf(head_dim)
    scaling.update({k: v for k, v in params.items() if k not in scaling and k != "rope_theta"})
    if {**scaling, "rope_theta": theta} != params:
        raise ValueError(f"the config's rope_parameters {params} do not describe {spec!r} "
                         f"(expected {spec.to_hf(head_dim)}); call ropescale.apply(model, spec) first")
    keys: dict[str, Any] = {"rope_parameters": params, "rope_theta": theta, "rope_scaling": scaling,
                            "max_position_embeddings": max_position_embeddings or spec.max_position_embeddings()}
    if spec.partial_rotary_factor != 1.0:  # transformers 4.x reads it at the top level
        keys["partial_rotary_factor"] = spec.partial_rotary_factor
    for key, alias in LEGACY_ALIASES.get(model_type, {}).items():
        keys[alias] = params.get(key, 1.0 if key == "partial_rotary_factor" else theta)
    return keys


def check_save_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """The output directory, if writing there is allowed: missing or empty, or non-empty with `overwrite`."""
    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"`output` {str(path)!r} is a file; give a directory path for the checkpoint")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(f"`output` {str(path)!r} exists and is not empty; pass `overwrite` to replace it")
    if not path.parent.is_dir():
        raise ValueError(f"`output` {str(path)!r}: its parent directory {str(path.parent)!r} does not exist")
    return path


def _readme(spec: RopeSpec, keys: dict[str, Any], provenance: dict[str, Any]) -> str:
    source = provenance.get("source", "a RoPE model")
    load = ("import ropescale  # registers rope type 'dynamic_yarn' with transformers\n"
            if needs_ropescale(spec) else "")
    return (f"# {spec.method} x{spec.factor:g} of {source}\n\n"
            f"Written by ropescale: RoPE {spec!r}, `max_position_embeddings` {keys['max_position_embeddings']}.\n"
            f"Loading: {loading_note(spec)}.\n\n"
            f"```python\n{load}from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/dir\")\n```\n\n"
            "vLLM and llama.cpp settings: `ropescale export --model path/to/this/dir --to vllm` (or `--to llamacpp`).\n")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def save_extended(model, tokenizer, spec: RopeSpec, output_dir: str | Path, overwrite: bool = False, *,
                  provenance: dict[str, Any] | None = None) -> Path:
    """Save `model` (already `apply`-ed with `spec`) as a complete checkpoint directory; returns its path.

    Writes model.safetensors and config.json (both rope schemas, see `hf_config_keys`), the tokenizer
    (skipped when None), `ropescale.json` (the spec, the loading note and `provenance`, e.g. the source model
    or the training run) and a short README.md. Atomic: everything is written into a temporary directory
    beside `output_dir`, which then replaces it, so an interrupted save leaves the old directory (or none).
    A non-empty `output_dir` is refused unless `overwrite`.
    """
    output = check_save_dir(output_dir, overwrite)
    info = ModelInfo.from_config(model)
    if info.rope != spec:
        raise ValueError(f"the model's rope is {info.rope!r}, not {spec!r}; call ropescale.apply(model, spec) first")
    keys = hf_config_keys(spec, info.head_dim, info.model_type, info.config.rope_parameters,
                          max_position_embeddings=info.max_position_embeddings(spec))
    provenance = dict(provenance or {})
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        text_config(config).update(keys)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "ropescale.json", {
            "ropescale_version": ropescale.__version__, "spec": spec.record(),
            "rope_parameters": keys["rope_parameters"], "max_position_embeddings": keys["max_position_embeddings"],
            "needs_ropescale": needs_ropescale(spec), "loading": loading_note(spec), **provenance})
        (tmp / "README.md").write_text(_readme(spec, keys, provenance), encoding="utf-8")
        _replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def _replace_dir(new: Path, output: Path) -> None:
    """Move `new` to `output`; an existing `output` is moved aside first and deleted only after the swap."""
    if not output.exists():
        os.replace(new, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.replace(output, old / "dir")
    try:
        os.replace(new, output)
    except BaseException:
        os.replace(old / "dir", output)  # put the previous checkpoint back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
