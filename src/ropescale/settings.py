"""Fields of the settings dataclasses (FinetuneConfig, StudyConfig, the evaluation tasks) with their help.

A field says once what it is: its type (the annotation), its default and one line of help. The command line
derives its flags from these fields (`ropescale.cli.args`), so adding a setting is adding a field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ropescale.model_info import SPEC_KNOBS


def setting(default: Any, help: str, *, choices: tuple | None = None, flag: bool = True) -> Any:
    """A dataclass field with `default` (a list or tuple default is copied into a new list per instance), its help,
    the values it accepts (`choices`), and whether the command line has a flag for it."""
    metadata = {"help": help, "choices": choices, "flag": flag}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def knob(name: str) -> Any:
    """A RopeSpec field a user may set (`ropescale.model_info.SPEC_KNOBS`), unset by default."""
    return setting(None, SPEC_KNOBS[name])
