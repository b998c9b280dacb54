"""ropescale: extend the context window of RoPE language models.

Scale the rotary position encoding (PI, NTK, YaRN, ...), fine-tune briefly at the target length,
evaluate at long context and export for transformers, vLLM and llama.cpp.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
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


class _RegisterRopeTypes(importlib.abc.MetaPathFinder):
    """Registers ropescale's rope types (`dynamic_yarn`) the moment transformers' rope registry is imported.

    So `import ropescale` is enough for `from_pretrained` of a dynamic-yarn checkpoint, in either import order,
    while `import ropescale` itself stays light (no torch, no transformers until they are needed).
    """

    TARGET = "transformers.modeling_rope_utils"

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.TARGET:
            return None
        sys.meta_path.remove(self)  # once; and so that the lookup below finds the real module
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _register_rope_types()

            spec.loader.exec_module = exec_then_register
        return spec


def _register_rope_types() -> None:
    from ropescale.patch.apply import register_rope_types

    register_rope_types()


if _RegisterRopeTypes.TARGET in sys.modules:
    _register_rope_types()
elif not any(isinstance(finder, _RegisterRopeTypes) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterRopeTypes())


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ropescale' has no attribute {name!r}")


__all__ = ["RopeSpec", "METHODS", "frequencies", "apply", "embedded_model_path", "__version__"]
