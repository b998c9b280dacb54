"""`ropescale export`: the settings that make transformers, vLLM or llama.cpp run a checkpoint as ropescale does.

Reads config.json only (`RopeSpec.from_hf`); the runtime settings come from `ropescale.export.runtimes` and
`ropescale.export.hf`. Whatever a runtime cannot represent is printed as a "lost:" line naming the static
equivalent used instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ropescale.cli.common import add_model_argument, add_spec_file_argument, positive_int, spec_file
from ropescale.export.hf import hf_config_keys, loading_note, needs_ropescale
from ropescale.export.runtimes import gguf_arch, llamacpp_settings, vllm_settings
from ropescale.io import write_json_atomic
from ropescale.model_info import ModelInfo
from ropescale.models import read_config_dict, resolve_model

HELP = ("print (or write as JSON) the transformers config keys, vLLM flags or llama.cpp flags for a checkpoint, or "
        "write a GGUF file that carries its scaling")

TARGETS = ("hf", "vllm", "llamacpp", "gguf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    add_spec_file_argument(parser)  # the settings for this spec instead of the checkpoint's own rope
    parser.add_argument("--to", required=True, choices=TARGETS, help="runtime: " + ", ".join(TARGETS))
    parser.add_argument("--max-len", type=positive_int, default=None,
                        help="longest sequence to serve (default: L0 x factor of the checkpoint's rope or --spec)")
    parser.add_argument("--output", default=None, help="also write the settings to this JSON file; --to gguf: the "
                        "GGUF file to write")
    parser.add_argument("--gguf", default=None, help="--to gguf: the base model's GGUF file, copied with the "
                        "extension's metadata (its weights and tokenizer are kept as they are)")
    parser.add_argument("--write-config", action="store_true",
                        help="--to hf only: rewrite the checkpoint's config.json with both rope schemas")


def _hf(spec, info: ModelInfo, max_len) -> dict[str, Any]:
    keys = hf_config_keys(spec, info.head_dim, info.model_type,
                          max_position_embeddings=info.max_position_embeddings(spec))
    lossy = [loading_note(spec)] if needs_ropescale(spec) else []
    return {"config": keys, "lossy": lossy}


def _vllm(spec, info: ModelInfo, max_len) -> dict[str, Any]:
    return vllm_settings(spec, max_len, info.head_dim)


def _llamacpp(spec, info: ModelInfo, max_len) -> dict[str, Any]:
    return llamacpp_settings(spec, max_len, info.head_dim, arch=gguf_arch(info.model_type))


_EXPORTERS = {"hf": _hf, "vllm": _vllm, "llamacpp": _llamacpp}


def _lines(target: str, model: str, settings: dict[str, Any]) -> list[str]:
    if target == "hf":
        body = ["config.json keys (transformers 5 rope_parameters + 4.x rope_theta/rope_scaling):",
                *(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in settings["config"].items())]
    elif target == "vllm":
        body = [f"vllm serve {model} {settings['command']}"]
    else:
        gguf = ", ".join(f"{k} = {f'[{len(v)} values]' if isinstance(v, list) else json.dumps(v)}"
                         for k, v in settings["gguf"].items())
        body = [f"llama-server -m model.gguf {' '.join(settings['flags'])}", f"GGUF metadata: {gguf}"]
    return body + [f"lost: {note}" for note in settings["lossy"]]


def run(args: argparse.Namespace) -> int:
    if args.write_config and args.to != "hf":
        raise ValueError("--write-config applies only to --to hf")
    if (args.to == "gguf") != (args.gguf is not None):
        raise ValueError("--gguf BASE.gguf goes with --to gguf (and --to gguf needs it, with --output OUT.gguf)")
    config = read_config_dict(args.model)
    info = ModelInfo.from_config(config)
    spec = spec_file(args, config, others=()) or info.rope
    if args.spec is not None and args.write_config:
        raise ValueError("--write-config rewrites the checkpoint's own rope; to give it --spec, run `ropescale "
                         "extend --spec` (it writes the weights and config together)")
    max_len = args.max_len or info.target_length(spec)
    if args.to == "gguf":
        return _gguf(args, spec, info, max_len)
    settings = _EXPORTERS[args.to](spec, info, max_len)
    result = {"target": args.to, "model": str(args.model or "embedded"), "spec": repr(spec), "max_len": max_len,
              **settings}
    print(f"{args.to}: {spec!r}, up to {max_len} tokens")
    print("\n".join(_lines(args.to, str(args.model or "embedded"), settings)))
    if args.output:
        _write_output(args.output, result)
        print(f"wrote {args.output}")
    if args.write_config:
        path = Path(resolve_model(args.model)) / "config.json"
        info.config.update(settings["config"])
        write_json_atomic(path, config)
        print(f"rewrote {path}")
    return 0


def _write_output(path, data: dict[str, Any]) -> None:
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"--output {str(path)!r} is a directory; give a file path for the JSON")
    write_json_atomic(path, data)


def _gguf(args: argparse.Namespace, spec, info: ModelInfo, max_len: int) -> int:
    """Write --output: the base GGUF with the checkpoint's scaling in its metadata; print what was written."""
    from ropescale.export.gguf import write_extended_gguf

    base, out = Path(args.gguf).expanduser(), args.output
    if not base.is_file() or base.suffix.lower() != ".gguf":
        raise ValueError(f"--gguf {args.gguf!r} is not a .gguf file")
    if not out or not str(out).lower().endswith(".gguf") or Path(out).resolve() == base.resolve():
        raise ValueError("--to gguf needs --output OUT.gguf, a new .gguf file beside or away from --gguf")
    settings = write_extended_gguf(base, spec, max_len, info.head_dim, out)
    keys = ", ".join(f"{k} = {f'[{len(v)} values]' if isinstance(v, list) else json.dumps(v)}"
                     for k, v in settings["gguf"].items())
    print(f"gguf: {spec!r}, up to {max_len} tokens")
    print(f"wrote {out}: {keys}")
    print(f"serve it with no rope flags: llama-server -m {out} -c {max_len}")
    for note in settings["lossy"]:
        print(f"lost: {note}")
    return 0
