"""The RoPE scaling methods: one pure function per method, and the registry `METHODS`.

Shape legend: `d` is the rotary dim, `int(head_dim * partial_rotary_factor)`, as transformers computes it;
every method returns `inv_freq` as float32 `[d // 2]` (frequency index i = 0 … d/2−1, highest frequency first)
and `attention_scale`, a float that multiplies cos and sin (so every q·k logit is multiplied by its square).

Where transformers 5 implements a method, the function repeats transformers' own float32 operations in the
same order, so the numbers agree to the last bit or within fp32 rounding (the parity tests measure it).
Adding a method: write one function `(spec, dim, seq_len) -> (inv_freq, attention_scale)` and add one
`Method(...)` line to `METHODS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ropescale.rope.spec import RopeSpec

# paper defaults for the YaRN ramp (YaRN §3.2: α = 1, β = 32 rotations over the original context, for Llama)
BETA_FAST = 32.0
BETA_SLOW = 1.0


# ---------------------------------------------------------------- shared math on plain numbers


def exponents(dim: int) -> torch.Tensor:
    """2i/d for i = 0 … d/2−1, float32 [d//2] (built as transformers does: int64 arange, then float)."""
    return torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim


def default_inv_freq(base: float, dim: int) -> torch.Tensor:
    """Plain RoPE inverse frequencies θ^(−2i/d), float32 [d//2] (Su et al. 2021, RoFormer Eq. 15)."""
    return 1.0 / (base ** exponents(dim))


def ntk_theta(rope_theta: float, factor: float, dim: int) -> float:
    """NTK-aware base θ' = θ·s^(d/(d−2)) (YaRN paper Eq. 16): the lowest frequency is scaled exactly like PI."""
    return rope_theta * factor ** (dim / (dim - 2))


def dynamic_theta(rope_theta: float, factor: float, original_max_position_embeddings: int,
                  seq_len: int | None, dim: int) -> float:
    """transformers' dynamic-NTK base θ·(s·l/L0 − (s−1))^(d/(d−2)) with l = max(seq_len, L0).

    Repeats `_compute_dynamic_ntk_parameters` (transformers 5.24) with its `max_position_embeddings` = L0.
    """
    seq_len = original_max_position_embeddings if seq_len is None else max(seq_len, original_max_position_embeddings)
    alpha = (factor * seq_len / original_max_position_embeddings) - (factor - 1)
    return rope_theta * alpha ** (dim / (dim - 2))


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's √(1/t) = 0.1·mscale·ln s + 1 for s > 1, else 1 (YaRN paper Eq. 22; DeepSeek's mscale variant)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_attention_factor(factor: float, attention_factor: float | None = None,
                          mscale: float | None = None, mscale_all_dim: float | None = None) -> float:
    """Attention scale of YaRN with transformers' precedence: explicit > mscale/mscale_all_dim ratio > 0.1 ln s + 1.

    The ratio applies only when both are set and non-zero (transformers tests their truthiness).
    """
    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return float(yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim))
    return yarn_get_mscale(factor)


def yarn_correction_range(beta_fast: float, beta_slow: float, dim: int, base: float,
                          original_max_position_embeddings: int, truncate: bool) -> tuple[float, float]:
    """Pair indices where the ramp starts and ends: the index j whose wavelength fits β times into L0.

    j(β) = d·ln(L0/(2πβ)) / (2 ln θ) (YaRN code `find_correction_dim`); floor/ceil when `truncate` (the
    released checkpoints, and transformers' default), clamped to [0, d−1] as transformers does.
    """
    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def yarn_ramp(low: float, high: float, n: int) -> torch.Tensor:
    """γ per pair index, float32 [n]: 0 below `low` (keep the frequency), 1 above `high` (divide by s)."""
    if low == high:
        high += 0.001  # transformers' guard against 0/0
    return torch.clamp((torch.arange(n, dtype=torch.float32) - low) / (high - low), 0, 1)


def yarn_inv_freq(base: float, dim: int, factor: float, original_max_position_embeddings: int,
                  beta_fast: float, beta_slow: float, truncate: bool) -> torch.Tensor:
    """NTK-by-parts frequencies h(θ_i) = (1−γ_i)·θ_i/s + γ'_i·θ_i (YaRN paper Eq. 17–20), float32 [d//2].

    Same operations as transformers' `_compute_yarn_parameters`: interpolated = 1/(s·θ^(2i/d)),
    extrapolated = 1/θ^(2i/d), blended by the ramp.
    """
    pos_freqs = base ** exponents(dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    low, high = yarn_correction_range(beta_fast, beta_slow, dim, base, original_max_position_embeddings, truncate)
    extrapolation = 1 - yarn_ramp(low, high, dim // 2)
    return inv_freq_interpolation * (1 - extrapolation) + inv_freq_extrapolation * extrapolation


def _beta(value: float | None, default: float) -> float:
    return default if value is None else value


def _truncate(value: bool | None) -> bool:
    return True if value is None else value  # transformers: rope_parameters.get("truncate", True)


def _need_dim_above_2(method: str, dim: int) -> None:
    if dim <= 2:
        raise ValueError(f"method {method!r} needs a rotary dim > 2 (its base uses d/(d−2)); got rotary dim {dim} "
                         "from head_dim and partial_rotary_factor")


# ---------------------------------------------------------------- the methods


def default_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Plain RoPE (Su et al. 2021, RoFormer Eq. 15): inv_freq_i = θ^(−2i/d), attention scale 1.

    Equals transformers' `LlamaRotaryEmbedding.compute_default_rope_parameters` (with partial rotary:
    `PhiRotaryEmbedding.compute_default_rope_parameters`).
    """
    return default_inv_freq(spec.rope_theta, dim), 1.0


def linear_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Position Interpolation (Chen et al. 2023, Eq. 4: f(x, m·L/L')): every frequency ÷ s.

    Equals transformers' `_compute_linear_scaling_rope_parameters` (`rope_type="linear"`).
    """
    inv_freq = default_inv_freq(spec.rope_theta, dim)
    inv_freq /= spec.factor  # scaling positions by 1/s is the same as scaling frequencies: angle = m·inv_freq
    return inv_freq, 1.0


def ntk_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Static NTK-aware scaling (bloc97 2023; YaRN paper §3.1, Eq. 16): plain RoPE with θ' = θ·s^(d/(d−2)).

    transformers has no such type; its exact equivalent is `rope_type="default"` with `rope_theta=θ'`
    (`compute_default_rope_parameters`), which is what `to_hf()` writes. vLLM calls it `ntk`.
    """
    _need_dim_above_2("ntk", dim)
    return default_inv_freq(ntk_theta(spec.rope_theta, spec.factor, dim), dim), 1.0


def dynamic_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Dynamic NTK (emozilla 2023; YaRN paper §3.3): θ' = θ·(s·l/L0 − (s−1))^(d/(d−2)) at the current length l.

    Equals transformers' `_compute_dynamic_ntk_parameters` (`rope_type="dynamic"`) with its
    `max_position_embeddings` = our `original_max_position_embeddings`; seq_len None or ≤ L0 gives plain RoPE.
    """
    _need_dim_above_2("dynamic", dim)
    base = dynamic_theta(spec.rope_theta, spec.factor, spec.original_max_position_embeddings, seq_len, dim)
    return default_inv_freq(base, dim), 1.0


def ntk_by_parts_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """NTK-by-parts (YaRN paper §3.2, Def. 2, Eq. 17–20): the YaRN ramp without the attention temperature.

    Equals transformers' `_compute_yarn_parameters` with `attention_factor=1.0` (what `to_hf()` writes);
    β_fast = 32, β_slow = 1 unless given.
    """
    inv_freq = yarn_inv_freq(spec.rope_theta, dim, spec.factor, spec.original_max_position_embeddings,
                             _beta(spec.beta_fast, BETA_FAST), _beta(spec.beta_slow, BETA_SLOW),
                             _truncate(spec.truncate))
    return inv_freq, 1.0


def yarn_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al. 2023, §3.4, Eq. 21–22): NTK-by-parts + attention scale √(1/t) = 0.1·ln s + 1.

    Equals transformers' `_compute_yarn_parameters` (`rope_type="yarn"`), including `attention_factor`,
    the DeepSeek `mscale`/`mscale_all_dim` ratio, non-default β and `truncate`.
    """
    inv_freq = yarn_inv_freq(spec.rope_theta, dim, spec.factor, spec.original_max_position_embeddings,
                             _beta(spec.beta_fast, BETA_FAST), _beta(spec.beta_slow, BETA_SLOW),
                             _truncate(spec.truncate))
    return inv_freq, yarn_attention_factor(spec.factor, spec.attention_factor, spec.mscale, spec.mscale_all_dim)


def dynamic_yarn_scale(seq_len: int | None, original_max_position_embeddings: int) -> float:
    """Dynamic-YaRN's s = max(1, l/L0) (YaRN paper §3.3); no length (model init) means s = 1."""
    return 1.0 if seq_len is None else max(1.0, seq_len / original_max_position_embeddings)


def dynamic_yarn_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Dynamic YaRN (YaRN paper §3.3): YaRN with s = max(1, l/L0) recomputed from the current length l.

    `factor` is not used by the math: it records the intended extension (max length L0·factor).
    seq_len None (model init) gives s = 1, i.e. plain RoPE with attention scale 1 (unless `attention_factor`
    is given: as in YaRN, an explicit value is used verbatim). transformers has no such type: `to_hf()` writes
    `rope_type="dynamic_yarn"`, and `hf_init_function("dynamic-yarn")` is its init function; because the name
    contains "dynamic", transformers' `dynamic_rope_update` recomputes it as the sequence grows.
    """
    scale = dynamic_yarn_scale(seq_len, spec.original_max_position_embeddings)
    inv_freq = yarn_inv_freq(spec.rope_theta, dim, scale, spec.original_max_position_embeddings,
                             _beta(spec.beta_fast, BETA_FAST), _beta(spec.beta_slow, BETA_SLOW),
                             _truncate(spec.truncate))
    return inv_freq, yarn_attention_factor(scale, spec.attention_factor, spec.mscale, spec.mscale_all_dim)


def llama3_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Llama 3.1 wavelength bands (Llama 3 herd paper; Meta's `apply_scaling`): wavelengths above L0/low ÷ s,
    below L0/high unchanged, smooth blend between.

    Equals transformers' `_compute_llama3_parameters` (`rope_type="llama3"`), same fp32 operations.
    """
    factor, low_freq_factor, high_freq_factor = spec.factor, spec.low_freq_factor, spec.high_freq_factor
    old_context_len = spec.original_max_position_embeddings
    inv_freq = default_inv_freq(spec.rope_theta, dim)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama), 1.0


def longrope_attention_factor(factor: float, original_max_position_embeddings: int,
                              attention_factor: float | None = None) -> float:
    """LongRoPE scale √(1 + ln s / ln L0) (LongRoPE 2024, §3; Phi-3), 1 for s ≤ 1; explicit value wins."""
    if attention_factor is not None:
        return float(attention_factor)
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(original_max_position_embeddings))


def longrope_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """LongRoPE (Ding et al. 2024): per-frequency searched factors λ_i, inv_freq_i = 1/(λ_i·θ^(2i/d)).

    `long_factor` when seq_len > L0, else `short_factor`. Equals transformers' `_compute_longrope_parameters`
    (`rope_type="longrope"`); attention scale precedence as there: `attention_factor` > `factor`.
    """
    field = "long_factor" if seq_len and seq_len > spec.original_max_position_embeddings else "short_factor"
    ext = getattr(spec, field)
    if len(ext) != dim // 2:
        raise ValueError(f"RopeSpec.{field} must have rotary_dim // 2 = {dim // 2} entries (one per frequency), "
                         f"got {len(ext)}")
    ext_factors = torch.tensor(ext, dtype=torch.float32)
    inv_freq = 1.0 / (ext_factors * spec.rope_theta ** exponents(dim))
    return inv_freq, longrope_attention_factor(spec.factor, spec.original_max_position_embeddings,
                                               spec.attention_factor)


def abf_rope(spec: RopeSpec, dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Adjusted base frequency (Xiong et al. 2023; Code Llama, θ = 10⁶): plain RoPE with a new θ.

    `rope_theta` IS the new θ; `factor` records the intended extension only. Exact transformers equivalent:
    `rope_type="default"` with that `rope_theta` (`compute_default_rope_parameters`).
    """
    return default_inv_freq(spec.rope_theta, dim), 1.0


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Method:
    """One RoPE scaling method.

    fn:             pure `(spec, rotary_dim, seq_len) -> (inv_freq fp32 [rotary_dim//2], attention_scale)`
    parameters:     RopeSpec fields it reads (besides rope_theta and partial_rotary_factor, used by all)
    required:       fields that must be set for it
    hf_type:        the transformers `rope_type` that `to_hf()` writes
    hf_equivalent:  how that type reproduces it ("native", or the exact equivalent)
    extends_max_positions: config `max_position_embeddings` is L0·factor (True) or L0 (False); see
                    `RopeSpec.max_position_embeddings`
    defaults:       values `ropescale.model_info.build_spec` gives fields that a base model cannot provide
    hints:          field -> what to set it to, said when a required field is missing
    """

    name: str
    fn: Callable[[RopeSpec, int, int | None], tuple[torch.Tensor, float]]
    description: str
    parameters: tuple[str, ...]
    required: tuple[str, ...]
    hf_type: str
    hf_equivalent: str
    extends_max_positions: bool
    defaults: Mapping[str, float] = field(default_factory=dict)
    hints: Mapping[str, str] = field(default_factory=dict)

    @property
    def needs_original(self) -> bool:
        """Whether `original_max_position_embeddings` (L0) must be set."""
        return "original_max_position_embeddings" in self.required


_L0 = "original_max_position_embeddings"
_YARN = ("factor", _L0, "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("default", default_rope, "plain RoPE, no scaling", (), (), "default", "native", True),
    Method("linear", linear_rope, "Position Interpolation: every frequency / s",
           ("factor",), (), "linear", "native", False),
    Method("ntk", ntk_rope, "static NTK-aware: base θ' = θ·s^(d/(d−2))",
           ("factor",), (), "default", "default with rope_theta = θ·s^(d/(d−2))", True),
    Method("dynamic", dynamic_rope, "dynamic NTK: base grows with the current length past L0",
           ("factor", _L0), (_L0,), "dynamic", "native (its max_position_embeddings = L0)", False),
    Method("ntk-by-parts", ntk_by_parts_rope, "YaRN's per-frequency ramp between PI and no change, no temperature",
           ("factor", _L0, "beta_fast", "beta_slow", "truncate"), (_L0,), "yarn",
           "yarn with attention_factor = 1.0", True),
    Method("yarn", yarn_rope, "NTK-by-parts + attention scale 0.1·ln s + 1", _YARN, (_L0,), "yarn", "native", True),
    Method("dynamic-yarn", dynamic_yarn_rope, "YaRN with s = max(1, l/L0) recomputed as the sequence grows",
           _YARN, (_L0,), "dynamic_yarn", "none: custom type dynamic_yarn (hf_init_function)", False),
    Method("llama3", llama3_rope, "Llama 3.1 wavelength bands with low/high frequency factors",
           ("factor", _L0, "low_freq_factor", "high_freq_factor"),
           (_L0, "low_freq_factor", "high_freq_factor"), "llama3", "native", True,
           defaults={"low_freq_factor": 1.0, "high_freq_factor": 4.0},   # Llama 3.1's published values
           hints={"low_freq_factor": "Llama 3.1: 1.0", "high_freq_factor": "Llama 3.1: 4.0"}),
    Method("longrope", longrope_rope, "searched per-frequency short/long factors + √(1+ln s/ln L0) scale",
           ("factor", _L0, "attention_factor", "short_factor", "long_factor"),
           (_L0, "short_factor", "long_factor"), "longrope", "native", True,
           hints={"short_factor": "searched per-frequency factors, one per rotary pair",
                  "long_factor": "searched per-frequency factors, one per rotary pair"}),
    Method("abf", abf_rope, "adjusted base frequency: a new θ (rope_theta is the new θ)",
           ("factor",), (), "default", "default with the new rope_theta", True),
)}


def rotary_dim(head_dim: int, partial_rotary_factor: float = 1.0) -> int:
    """transformers' rotary dim `int(head_dim * partial_rotary_factor)`; must be even and ≥ 2."""
    if isinstance(head_dim, bool) or not isinstance(head_dim, int):
        raise TypeError(f"head_dim must be an int, got {type(head_dim).__name__} {head_dim!r}")
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    dim = int(head_dim * partial_rotary_factor)
    if dim < 2 or dim % 2:
        raise ValueError(f"the rotary dim int(head_dim * partial_rotary_factor) = int({head_dim} * "
                         f"{partial_rotary_factor}) = {dim} must be even and >= 2 (it holds pairs of dimensions)")
    return dim


def frequencies(spec: RopeSpec, head_dim: int, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and attention scale of `spec` for a head of `head_dim` at sequence length `seq_len`.

    Returns `(inv_freq, attention_scale)`: float32 [rotary_dim // 2] and a float that multiplies cos and sin.
    `seq_len` matters only for the dynamic methods (`dynamic`, `dynamic-yarn`) and `longrope`; None means the
    model's original length (transformers' value at model init).
    """
    dim = rotary_dim(head_dim, spec.partial_rotary_factor)
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int)):
        raise TypeError(f"seq_len must be an int or None, got {type(seq_len).__name__} {seq_len!r}")
    if seq_len is not None and seq_len < 1:
        raise ValueError(f"seq_len must be >= 1 or None, got {seq_len}")
    try:
        inv_freq, attention_scale = METHODS[spec.method].fn(spec, dim, seq_len)
    except OverflowError as exc:  # a float64 base like θ·s^(d/(d−2)) too large to represent
        raise ValueError(f"rope_theta={spec.rope_theta} and factor={spec.factor} overflow the base of method "
                         f"{spec.method!r} ({exc})") from None
    # fp32 cannot represent every finite spec (θ = 1e39, s = 1e300 …): say so instead of returning 0 or inf
    if not bool(torch.isfinite(inv_freq).all() and (inv_freq > 0).all()):
        raise ValueError(f"rope_theta={spec.rope_theta} and factor={spec.factor} give inverse frequencies that "
                         "underflow or overflow float32; use a smaller rope_theta or factor")
    if not (math.isfinite(attention_scale) and attention_scale > 0):
        raise ValueError(f"the attention scale of {spec!r} is {attention_scale}, not a positive finite number")
    return inv_freq, float(attention_scale)
