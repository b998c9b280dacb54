"""Apply a RopeSpec to a transformers model in memory, through transformers' own extension points.

`import ropescale` registers ropescale's own rope types (`dynamic_yarn`) with transformers (`register_rope_types`).
"""

from ropescale.patch.apply import CUSTOM_ROPE_TYPES, apply, install_dynamic_reset_hook, register_rope_types

__all__ = ["CUSTOM_ROPE_TYPES", "apply", "install_dynamic_reset_hook", "register_rope_types"]
