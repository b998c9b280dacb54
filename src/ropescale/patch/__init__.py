"""Apply a RopeSpec to a transformers model in memory, through transformers' own extension points."""

from ropescale.patch.apply import apply, register_rope_types, rope_config, spec_for_model

__all__ = ["apply", "register_rope_types", "rope_config", "spec_for_model"]
