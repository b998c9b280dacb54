"""RoPE scaling math: `RopeSpec`, the method registry `METHODS`, and `frequencies()`.

Pure functions of plain numbers; no model code here. `ropescale.rope.hf` converts to and from transformers'
`rope_parameters` and builds transformers init functions.
"""

from ropescale.rope.hf import hf_init_function
from ropescale.rope.methods import METHODS, Method, frequencies, rotary_dim
from ropescale.rope.spec import RopeSpec

__all__ = ["RopeSpec", "METHODS", "Method", "frequencies", "rotary_dim", "hf_init_function"]
