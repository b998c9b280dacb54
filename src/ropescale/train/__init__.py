"""Fine-tuning at the target length: chunked loss, training loop on accelerate, LoRA, PoSE, checkpoints."""

from __future__ import annotations

_LAZY = {  # imported on first use, so `import ropescale.train.loss` does not pull accelerate and peft
    "FinetuneConfig": "ropescale.train.config",
    "finetune": "ropescale.train.loop",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ropescale.train' has no attribute {name!r}")


__all__ = ["FinetuneConfig", "finetune"]
