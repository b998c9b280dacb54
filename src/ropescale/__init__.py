"""ropescale: extend the context window of RoPE language models.

Scale the rotary position encoding (PI, NTK, YaRN, ...), fine-tune briefly at the target length,
evaluate at long context and export for transformers, vLLM and llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_LAZY = {
    # name -> module that defines it; imported on first use so that `import ropescale` stays light
    "RopeSpec": "ropescale.rope",
    "METHODS": "ropescale.rope",
    "frequencies": "ropescale.rope",
    "apply": "ropescale.patch",
}


def embedded_model_path() -> Path:
    """Directory of the embedded checkpoint (Llama architecture, L0 = 256), loadable with `from_pretrained`."""
    return Path(__file__).parent / "assets" / "model"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ropescale' has no attribute {name!r}")


__all__ = ["RopeSpec", "METHODS", "frequencies", "apply", "embedded_model_path", "__version__"]
