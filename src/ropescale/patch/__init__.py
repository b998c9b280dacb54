"""Apply a RopeSpec to a transformers model in memory, through transformers' own extension points.

Importing this package registers ropescale's own rope types (`dynamic_yarn`) with transformers.
"""

from ropescale.patch.apply import (
    apply,
    install_dynamic_reset_hook,
    register_rope_types,
    rope_config,
    spec_for_model,
)

register_rope_types()

__all__ = ["apply", "install_dynamic_reset_hook", "register_rope_types", "rope_config", "spec_for_model"]
