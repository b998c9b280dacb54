"""The search space of `ropescale search`: one rescale factor per rotary pair (longrope's `long_factor`) and the
attention scale, with LongRoPE's monotone constraint, the seeds and the two variation operators.

A factor λ_i divides pair i's plain-RoPE frequency: inv_freq_i = θ^(−2i/d) / λ_i (LongRoPE 2024, Eq. 3; the
`long_factor` of transformers' `longrope` type). Pair 0 has the highest frequency. LongRoPE's released search
(`evolution/algorithms/dim_mono.py`) keeps the factors non-decreasing from high to low frequency
(λ_0 ≤ λ_1 ≤ … ≤ λ_{d/2−1}) and within [1, bound]: every candidate here satisfies both.

Seeds are the factors PI, NTK and YaRN apply to each pair: their inv_freq divided into plain RoPE's at the same θ
(PI: s everywhere; NTK: s^(2i/(d−2)); YaRN: 1 on fast pairs, s on slow ones, a ramp between).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ropescale.rope import RopeSpec, frequencies
from ropescale.rope.methods import default_inv_freq, rotary_dim

SEED_METHODS = ("linear", "ntk", "yarn")  # PI, NTK-aware, YaRN: LongRoPE's initial population
DIGITS = 4  # children's factors and scales are rounded to 1e-4: readable files, no effect on the score


@dataclass(frozen=True)
class Candidate:
    """One point of the search space: a factor per rotary pair (high frequency first) and the attention scale.

    `origin` says where it came from (a seed's method, "mutation", "crossover"); it is not part of its identity.
    """

    long_factor: tuple[float, ...]
    attention_factor: float
    origin: str = dataclasses.field(default="", compare=False)

    @property
    def key(self) -> tuple:
        return self.long_factor, self.attention_factor

    def record(self) -> dict:
        return {"long_factor": list(self.long_factor), "attention_factor": self.attention_factor,
                "origin": self.origin}

    @classmethod
    def from_record(cls, record: dict) -> Candidate:
        return cls(tuple(float(x) for x in record["long_factor"]), float(record["attention_factor"]),
                   str(record.get("origin", "")))


@dataclass(frozen=True)
class Space:
    """Bounds of the search: `pairs` factors in [1, max_factor]; the attention scale fixed (`fixed_attention`) or
    searched within [min_attention, max_attention]."""

    pairs: int
    max_factor: float
    fixed_attention: float | None = None
    min_attention: float = 1.0
    max_attention: float = 2.0

    def __post_init__(self) -> None:
        if self.max_factor < 1:
            raise ValueError(f"`max_factor` must be >= 1 (factors lie in [1, max_factor]), got {self.max_factor}")
        if self.fixed_attention is not None and not self.fixed_attention > 0:
            raise ValueError(f"`fixed_attention_scale` must be > 0 (it multiplies cos and sin), "
                             f"got {self.fixed_attention}")

    def contains(self, candidate: Candidate) -> bool:
        """In bounds, monotone, the right length, and the attention scale fixed or within its range."""
        f = np.asarray(candidate.long_factor)
        attention_ok = (candidate.attention_factor == self.fixed_attention if self.fixed_attention is not None
                        else self.min_attention <= candidate.attention_factor <= self.max_attention)
        return (len(f) == self.pairs and bool(np.all(f >= 1.0) and np.all(f <= self.max_factor))
                and is_monotone(f) and attention_ok)


def is_monotone(factors) -> bool:
    """Non-decreasing from the highest frequency (pair 0) to the lowest: LongRoPE's constraint."""
    return bool(np.all(np.diff(np.asarray(factors, dtype=float)) >= 0))


def method_divisors(spec: RopeSpec, head_dim: int, seq_len: int | None = None) -> np.ndarray:
    """The factor `spec` applies to each rotary pair: plain RoPE's inv_freq at the spec's θ ÷ the spec's inv_freq,
    float64 [rotary_dim // 2]. PI gives s everywhere; YaRN 1 on the fastest pairs and s on the slowest."""
    inv_freq, _ = frequencies(spec, head_dim, seq_len)
    plain = default_inv_freq(spec.rope_theta, rotary_dim(head_dim, spec.partial_rotary_factor))
    return (plain.double() / inv_freq.double()).numpy()


def seeds(base: RopeSpec, head_dim: int, factor: float, space: Space) -> list[Candidate]:
    """PI, NTK and YaRN at `factor` for a model whose plain rope is `base` (θ, L0, partial rotary), as candidates:
    their per-pair divisors, and their own attention scale unless the space fixes it."""
    out = []
    for method in SEED_METHODS:
        spec = RopeSpec(method=method, factor=factor, rope_theta=base.rope_theta,
                        partial_rotary_factor=base.partial_rotary_factor,
                        original_max_position_embeddings=base.original_max_position_embeddings)
        divisors = np.clip(method_divisors(spec, head_dim), 1.0, space.max_factor)
        divisors = np.maximum.accumulate(divisors)  # fp rounding of a ramp's flat ends must not break monotony
        attention = _attention(frequencies(spec, head_dim)[1], space, digits=None)
        out.append(Candidate(tuple(float(x) for x in divisors), attention, origin=method))
    return out


def project(factors: np.ndarray, space: Space, rng: np.random.Generator) -> np.ndarray:
    """Back into the space: clip to [1, max_factor], then restore monotony in a random direction (raise the pairs
    after a rise, or lower the pairs before a drop), so neither direction of change is favoured."""
    f = np.clip(factors, 1.0, space.max_factor)
    if rng.random() < 0.5:
        f = np.maximum.accumulate(f)
    else:
        f = np.minimum.accumulate(f[::-1])[::-1]
    return np.round(f, DIGITS)


def _attention(value: float, space: Space, digits: int | None = DIGITS) -> float:
    """The fixed scale, else `value` clipped to the searched range (and rounded for children)."""
    if space.fixed_attention is not None:
        return float(space.fixed_attention)
    value = float(np.clip(value, space.min_attention, space.max_attention))
    return value if digits is None else round(value, digits)


def mutate(parent: Candidate, space: Space, rng: np.random.Generator, rate: float = 0.3,
           sigma: float = 0.25, attention_sigma: float = 0.05) -> Candidate:
    """A child of `parent`: each factor with probability `rate` (at least one) multiplied by exp(N(0, sigma)),
    projected back into the space; the attention scale (when searched) moved by N(0, attention_sigma) half the
    time."""
    f = np.asarray(parent.long_factor, dtype=float)
    chosen = rng.random(len(f)) < rate
    chosen[rng.integers(len(f))] = True
    f = f * np.exp(np.where(chosen, rng.normal(0.0, sigma, len(f)), 0.0))
    attention = parent.attention_factor
    if space.fixed_attention is None and rng.random() < 0.5:
        attention += rng.normal(0.0, attention_sigma)
    return Candidate(tuple(float(x) for x in project(f, space, rng)), _attention(attention, space), "mutation")


def crossover(a: Candidate, b: Candidate, space: Space, rng: np.random.Generator) -> Candidate:
    """A child of two parents: `a`'s factors up to a random cut, `b`'s after it, projected back into the space;
    the attention scale of either parent."""
    cut = int(rng.integers(1, len(a.long_factor))) if len(a.long_factor) > 1 else 0
    f = np.concatenate([np.asarray(a.long_factor[:cut]), np.asarray(b.long_factor[cut:])])
    attention = a.attention_factor if rng.random() < 0.5 else b.attention_factor
    return Candidate(tuple(float(x) for x in project(f, space, rng)), _attention(attention, space), "crossover")


def to_spec(candidate: Candidate, base: RopeSpec, factor: float) -> RopeSpec:
    """The longrope spec of a candidate: `long_factor` beyond L0, plain RoPE (short_factor 1) up to it."""
    return RopeSpec(method="longrope", factor=factor, rope_theta=base.rope_theta,
                    original_max_position_embeddings=base.original_max_position_embeddings,
                    partial_rotary_factor=base.partial_rotary_factor,
                    short_factor=(1.0,) * len(candidate.long_factor), long_factor=candidate.long_factor,
                    attention_factor=candidate.attention_factor)
