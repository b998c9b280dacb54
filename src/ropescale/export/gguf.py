"""A GGUF file that carries the extension: a copy of the base model's GGUF whose metadata says the new rope, so
`llama-server -m OUT.gguf` serves the extended model with no flags.

The keys and tensors are `llamacpp_settings(...)["gguf"]`, written as llama.cpp's own converter
(`convert_hf_to_gguf.py`) writes them: `{arch}.context_length`, `{arch}.rope.freq_base`, `{arch}.rope.scaling.*`
(type, factor, original_context_length, attn_factor), longrope's `rope_factors_long/short.weight` and llama3's
`rope_freqs.weight` as F32 tensors. Every tensor of the base is copied byte for byte (quantization kept). What a
GGUF file cannot carry is refused with the reason: dynamic scaling (llama.cpp has none), YaRN β values and
truncate=False (flags only for llama.cpp's generic architectures).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ropescale.export.runtimes import llamacpp_settings
from ropescale.models import GGUF_EXTRA, GGUF_SCALING_TENSORS
from ropescale.rope.spec import RopeSpec

_INT_KEYS = ("context_length", "original_context_length", "dimension_count")


def _gguf():
    try:
        import gguf  # optional: the ropescale[gguf] extra
    except ImportError:
        raise ValueError(f"reading and writing GGUF files needs the gguf package: {GGUF_EXTRA}") from None
    return gguf


def refusals(spec: RopeSpec, settings: dict) -> list[str]:
    """Why a GGUF file cannot carry `spec` (empty when it can)."""
    why = []
    if spec.method in ("dynamic", "dynamic-yarn"):
        why.append(f"llama.cpp has no dynamic scaling: method {spec.method!r} cannot be written into a GGUF file "
                   "(--to llamacpp serves it statically and says what that loses)")
    if any(f.startswith("--yarn-beta") for f in settings["flags"]):
        why.append("YaRN beta_fast/beta_slow other than 32/1 reach llama.cpp's generic architectures only as "
                   "flags (--to llamacpp prints them)")
    if spec.truncate is False:
        why.append("llama.cpp always truncates the YaRN correction range: truncate=false cannot be served")
    return why


def read_metadata(path: str | Path) -> dict:
    """Every key of a GGUF file with its value (arrays of tokens and merges by their length) and the tensor names:
    {"keys": {...}, "tensors": {name: (shape, type name)}}."""
    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))
    keys = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        keys[name] = f"<{len(value)} items>" if isinstance(value, list) and len(value) > 64 else value
    tensors = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}
    return {"keys": keys, "tensors": tensors}


def architecture(path: str | Path) -> str:
    gguf = _gguf()
    return str(gguf.GGUFReader(str(path)).fields["general.architecture"].contents())


def write_extended_gguf(base: str | Path, spec: RopeSpec, max_len: int, head_dim: int,
                        output: str | Path) -> dict:
    """Copy `base` to `output` with the metadata of `spec` served up to `max_len` tokens; returns the settings
    (`gguf` keys written, `lossy` notes). Raises ValueError when GGUF cannot carry the spec (`refusals`)."""
    settings = llamacpp_settings(spec, max_len, head_dim, arch=architecture(base))
    why = refusals(spec, settings)
    if why:
        raise ValueError("; ".join(why))
    keys = {k: v for k, v in settings["gguf"].items() if not k.endswith(".weight")}
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in settings["gguf"].items() if k.endswith(".weight")}
    copy_gguf(base, output, keys=keys, tensors=tensors, drop_scaling=True)
    return settings


def write_dequantized_gguf(base: str | Path, output: str | Path) -> None:
    """Copy `base` with every quantized tensor dequantized to F32 (what transformers computes with), so a runtime
    and transformers can be compared on the same weights."""
    copy_gguf(base, output, dequantize=True)


def copy_gguf(base: str | Path, output: str | Path, keys: dict | None = None, tensors: dict | None = None,
              drop_scaling: bool = False, dequantize: bool = False) -> None:
    """Copy a GGUF file, setting `keys` (name -> value) and adding or replacing `tensors` (name -> F32 array);
    drop_scaling removes the base's `{arch}.rope.scaling.*` keys and `GGUF_SCALING_TENSORS` first (a Llama 3.1 file's
    rope_freqs.weight would scale a new rope twice); dequantize turns quantized tensors into F32. Written to a
    temporary file, then renamed (a failure leaves the previous file or none)."""
    gguf = _gguf()
    keys, tensors = keys or {}, tensors or {}
    reader = gguf.GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    output = Path(output)
    tmp = output.with_name(f".tmp-{output.name}")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
        for field in reader.fields.values():
            name = field.name
            if name == "general.architecture" or name.startswith("GGUF.") or name in keys \
                    or (drop_scaling and name.startswith(f"{arch}.rope.scaling.")):
                continue
            if dequantize and name == "general.file_type":
                continue  # no longer a quantized file
            sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
        for name, value in keys.items():
            writer.add_key_value(name, value, _value_type(gguf, name, value))
        kept = [t for t in reader.tensors if t.name not in tensors
                and not (drop_scaling and t.name in GGUF_SCALING_TENSORS)]
        data = [_tensor_data(gguf, t, dequantize) for t in kept] + list(tensors.values())
        types = [gguf.GGMLQuantizationType.F32 if dequantize or t.name in tensors else t.tensor_type for t in kept]
        types += [gguf.GGMLQuantizationType.F32] * len(tensors)
        for name, array, qtype in zip([t.name for t in kept] + list(tensors), data, types):
            writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for array in data:
            writer.write_tensor_data(array, tensor_endianess=reader.endianess)
        writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)


def _tensor_data(gguf, tensor, dequantize: bool):
    if not dequantize or tensor.tensor_type == gguf.GGMLQuantizationType.F32:
        return tensor.data
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)


def _value_type(gguf, name: str, value):
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    if name.rsplit(".", 1)[-1] in _INT_KEYS:
        if not 0 <= value < 2 ** 32:
            raise ValueError(f"GGUF key {name} = {value} does not fit its 32-bit unsigned integer")
        return gguf.GGUFValueType.UINT32
    return gguf.GGUFValueType.FLOAT32
