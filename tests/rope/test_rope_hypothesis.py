"""Property: any input either builds a spec whose frequencies are finite, positive and non-increasing with the
dimension index (and which round-trips through to_hf/from_hf), or raises ValueError/TypeError. Nothing else."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropescale.rope import METHODS, RopeSpec, frequencies

ANYTHING = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**9), st.booleans(),
                     st.text(max_size=3), st.lists(st.floats(), max_size=3))

# mostly valid values per field (hypothesis also tries their edges); ANYTHING brings wrong types, NaN, ±inf,
# zeros and negatives
PLAUSIBLE = {
    "rope_theta": st.floats(1.0, 1e12),
    "factor": st.floats(1.0, 1e4),
    "original_max_position_embeddings": st.integers(2, 2**21),
    "attention_factor": st.floats(0.0, 10.0),
    "beta_fast": st.floats(0.01, 256.0),
    "beta_slow": st.floats(0.01, 256.0),
    "mscale": st.floats(0.0, 5.0),
    "mscale_all_dim": st.floats(0.0, 5.0),
    "truncate": st.booleans(),
    "low_freq_factor": st.floats(0.01, 16.0),
    "high_freq_factor": st.floats(0.01, 16.0),
    "partial_rotary_factor": st.sampled_from([1.0, 1.0, 0.5, 0.25, 0.4]),
}


@st.composite
def inputs(draw):
    """(RopeSpec kwargs, head_dim, seq_len): half the time only fields the method reads, with required ones set
    and plausible values (so that valid specs are common), half the time any field with any value."""
    method = draw(st.sampled_from(list(METHODS) + ["bogus"]))
    head_dim = draw(st.one_of(st.sampled_from([2, 4, 16, 64, 80, 128, 256]), st.integers(-2, 1024)))
    wild = draw(st.booleans())
    known = METHODS.get(method)
    used = set(known.parameters) | {"rope_theta", "partial_rotary_factor"} if known else set()
    kwargs = {"method": method}
    for name, plausible in PLAUSIBLE.items():
        if wild:
            if draw(st.booleans()) and (name in used or draw(st.integers(0, 9)) == 0):
                kwargs[name] = draw(st.one_of(plausible, ANYTHING))
        elif name in used and (name in known.required or draw(st.booleans())):
            kwargs[name] = draw(plausible)
    n = max(1, head_dim // 2)
    for name in ("short_factor", "long_factor"):
        size = draw(st.sampled_from([n, n, n, max(1, n - 1)]))
        plausible = st.lists(st.floats(0.01, 100.0), min_size=size, max_size=size)
        if wild and draw(st.booleans()):   # NaN/negative entries, wrong types, lists on methods that ignore them
            kwargs[name] = draw(st.one_of(plausible, ANYTHING, st.lists(ANYTHING, min_size=size, max_size=size)))
        elif "short_factor" in used:
            kwargs[name] = draw(plausible)
    seq_len = draw(st.one_of(st.none(), st.integers(1, 10**7), st.integers(-5, 0)))
    return kwargs, head_dim, seq_len


def _non_decreasing(values):
    return all(a <= b for a, b in zip(values, values[1:]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(inputs())
def test_frequencies_are_sane_or_a_clean_error(case):
    kwargs, head_dim, seq_len = case
    try:
        spec = RopeSpec(**kwargs)
        inv_freq, scale = frequencies(spec, head_dim, seq_len)
    except (ValueError, TypeError):
        return
    assert inv_freq.dtype == torch.float32
    assert bool(torch.isfinite(inv_freq).all()) and bool((inv_freq > 0).all())
    assert math.isfinite(scale) and scale > 0
    # LongRoPE's search keeps its factors non-decreasing (λ_i ≤ λ_i+1); other lists give other orders, legitimately
    used = spec.long_factor if seq_len and spec.method == "longrope" and seq_len > spec.original_max_position_embeddings \
        else spec.short_factor
    if spec.method != "longrope" or _non_decreasing(used):
        # non-increasing up to fp32 rounding of the blends (a few ulps)
        assert bool((inv_freq[1:] <= inv_freq[:-1] * (1 + 1e-6)).all()), (spec, inv_freq)
    assert RopeSpec.from_hf(spec.to_hf(head_dim)) == spec


HF_KEYS = ["rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings", "attention_factor",
           "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate", "low_freq_factor", "high_freq_factor",
           "short_factor", "long_factor", "partial_rotary_factor", "ropescale_method", "ropescale_factor"]
ROPE_TYPES = st.sampled_from(["default", "linear", "dynamic", "yarn", "llama3", "longrope", "dynamic_yarn", "bogus"])


@st.composite
def hf_configs(draw):
    """A config dict as found in a config.json: rope_parameters (v5) or rope_theta/rope_scaling (4.x), any values."""
    params = {k: draw(st.one_of(ROPE_TYPES if k in ("rope_type", "type") else PLAUSIBLE.get(k, ANYTHING), ANYTHING))
              for k in draw(st.lists(st.sampled_from(HF_KEYS), unique=True, max_size=6))}
    kwargs, head_dim, _ = draw(inputs())
    try:   # half the time: a valid spec's own dict, with one key given any value
        valid = RopeSpec(**kwargs).to_hf(head_dim) if draw(st.booleans()) else None
    except (ValueError, TypeError):
        valid = None
    if valid is not None:
        params = {**valid, **dict(list(params.items())[:1])}
    config = {"max_position_embeddings": draw(st.one_of(st.integers(1, 2**20), ANYTHING))}
    if draw(st.booleans()):
        config["rope_parameters"] = params
    else:
        config["rope_theta"] = draw(st.one_of(PLAUSIBLE["rope_theta"], ANYTHING))
        config["rope_scaling"] = draw(st.one_of(st.none(), st.just(params), ANYTHING))
    return config, draw(st.sampled_from([4, 16, 64, 128]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(hf_configs())
def test_reading_any_config_gives_a_sane_spec_or_a_clean_error(case):
    """What `ropescale plan/export/eval` read from a user's config.json: a spec that runs, or ValueError/TypeError."""
    config, head_dim = case
    try:
        spec = RopeSpec.from_hf(config)
        inv_freq, scale = frequencies(spec, head_dim)
    except (ValueError, TypeError):
        return
    assert bool(torch.isfinite(inv_freq).all()) and bool((inv_freq > 0).all())
    assert math.isfinite(scale) and scale > 0
