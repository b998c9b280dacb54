"""Learning-rate schedules: linear warmup, then constant, linear decay or cosine decay (a registry).

YaRN (§4.1) warms up linearly for 20 steps; its code offers `constant` and `linear` decay after that
(transformers' `get_constant_schedule_with_warmup` / `get_linear_schedule_with_warmup`). Unlike those, the first
step here already gets lr/warmup instead of 0, so no step is wasted (it matters for runs of a few hundred steps).
"""

from __future__ import annotations

import math
from functools import partial

import torch


def _constant(progress: float) -> float:
    return 1.0


def _linear(progress: float) -> float:
    return 1.0 - progress


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# schedule name -> decay after warmup, as a function of progress in [0, 1)
DECAYS = {"constant": _constant, "linear": _linear, "cosine": _cosine}


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak lr for the optimizer step with 0-based index `step`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return DECAYS[schedule](min(progress, 1.0))


def make_scheduler(optimizer, schedule: str, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule not in DECAYS:
        raise ValueError(f"schedule must be one of {', '.join(DECAYS)}, got {schedule!r}")
    fn = partial(lr_factor, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
