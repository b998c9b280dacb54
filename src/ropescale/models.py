"""Loading models and tokenizers by name: the embedded default, a local directory, or a Hub id.

One loader for every command, so that a wrong path, a missing config.json or a corrupted weights file
gets the same clear message everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ropescale
from ropescale.patch import install_dynamic_reset_hook

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_model(name: str | Path | None) -> str:
    """Map a --model value to what `from_pretrained` takes; None or "embedded" is the embedded checkpoint."""
    if name is None or str(name) == "embedded":
        path = ropescale.embedded_model_path()
        if not (path / "config.json").is_file():
            raise ValueError(f"the embedded model is missing at {path}; reinstall ropescale")
        return str(path)
    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"`model` {text!r} is a file; give a model directory or a Hub id")
        if not (path / "config.json").is_file():
            raise ValueError(f"`model` {text!r} has no config.json; give a Hugging Face model directory")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not _HUB_ID.match(text):
        raise ValueError(f"`model` {text!r} does not exist (neither a local directory nor a Hub id like org/name)")
    return text


def read_config_dict(name: str | Path | None) -> dict:
    """config.json as a dict, without downloading weights (a Hub id fetches config.json only)."""
    resolved = resolve_model(name)
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
    """The transformers config of a model name (embedded, a directory, a Hub id), without loading weights."""
    from transformers import AutoConfig  # heavy: loaded when a command first needs a model

    resolved = resolve_model(name)
    try:
        return AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"`model` {resolved!r}: could not read its config ({_first_line(exc)})") from None


def load_tokenizer(name: str | Path | None):
    from transformers import AutoTokenizer

    resolved = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"`model` {resolved!r}: could not load its tokenizer ({_first_line(exc)})") from None


def load_model(name: str | Path | None, *, dtype=None, device=None, attn_implementation: str = "sdpa"):
    """AutoModelForCausalLM in eval mode; fp32 by default on CPU (RoPE math stays fp32 regardless)."""
    import torch
    from transformers import AutoModelForCausalLM

    from safetensors import SafetensorError  # a truncated or corrupted weights file; not an OSError

    resolved = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved, dtype=dtype or torch.float32, attn_implementation=attn_implementation)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as exc:
        # transformers raises on an unknown architecture or missing weights
        raise ValueError(f"`model` {resolved!r}: could not load the model ({_first_line(exc)})") from None
    if device is not None:
        model.to(device)
    install_dynamic_reset_hook(model)  # a no-op unless the checkpoint uses a dynamic rope type
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
