"""The search space: LongRoPE's monotone constraint, seeds equal to PI/NTK/YaRN's per-pair divisors, and variation
operators that never leave the space."""

import math

import numpy as np
import pytest
import torch

from ropescale.rope import RopeSpec
from ropescale.search.space import (Candidate, Space, crossover, is_monotone, method_divisors, mutate, project,
                                    seeds, to_spec)

HEAD_DIM = 64
BASE = RopeSpec(method="default", rope_theta=10000.0, original_max_position_embeddings=256)


def _space(**kw):
    return Space(pairs=HEAD_DIM // 2, max_factor=16.0, **kw)


def _config(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=HEAD_DIM, max_position_embeddings=256, **kw)


def test_pi_seed_divides_every_pair_by_the_factor():
    pi = {c.origin: c for c in seeds(BASE, HEAD_DIM, 8.0, _space())}["linear"]
    assert pi.long_factor == (8.0,) * (HEAD_DIM // 2)
    assert pi.attention_factor == 1.0


def test_ntk_seed_is_the_closed_form_divisor():
    # NTK's base θ·s^(d/(d−2)) divides pair i by s^(2i/(d−2)) (YaRN paper Eq. 16)
    ntk = {c.origin: c for c in seeds(BASE, HEAD_DIM, 8.0, _space())}["ntk"]
    expected = [8.0 ** (2 * i / (HEAD_DIM - 2)) for i in range(HEAD_DIM // 2)]
    np.testing.assert_allclose(ntk.long_factor, expected, rtol=1e-5)
    assert ntk.attention_factor == 1.0


def test_yarn_seed_equals_transformers_yarn_frequencies():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = _config(rope_parameters={"rope_type": "yarn", "factor": 8.0, "rope_theta": 10000.0,
                                      "original_max_position_embeddings": 256})
    inv_freq, attention = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    plain = 1.0 / (10000.0 ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
    yarn = {c.origin: c for c in seeds(BASE, HEAD_DIM, 8.0, _space())}["yarn"]
    np.testing.assert_allclose(yarn.long_factor, (plain / inv_freq.double()).numpy(), rtol=1e-5)
    assert yarn.long_factor[0] == pytest.approx(1.0) and yarn.long_factor[-1] == pytest.approx(8.0)
    assert yarn.attention_factor == pytest.approx(attention) == pytest.approx(0.1 * math.log(8) + 1)


def test_a_fixed_attention_scale_is_every_seeds():
    assert {c.attention_factor for c in seeds(BASE, HEAD_DIM, 8.0, _space(fixed_attention=1.3))} == {1.3}


def test_every_seed_is_in_the_space():
    space = _space()
    assert all(space.contains(c) for c in seeds(BASE, HEAD_DIM, 8.0, space))


def test_method_divisors_of_linear_are_the_factor():
    np.testing.assert_allclose(method_divisors(RopeSpec(method="linear", factor=4.0), 32), 4.0, rtol=1e-6)


def test_is_monotone_means_non_decreasing_from_high_to_low_frequency():
    assert is_monotone([1.0, 1.0, 2.0, 8.0])
    assert not is_monotone([1.0, 3.0, 2.0])


@pytest.mark.parametrize("seed", range(5))
def test_project_restores_bounds_and_monotony(seed):
    rng = np.random.default_rng(seed)
    f = project(rng.uniform(0.1, 40.0, 32), _space(), rng)
    assert is_monotone(f) and f.min() >= 1.0 and f.max() <= 16.0


@pytest.mark.parametrize("fixed", [None, 1.25])
def test_mutations_and_crossovers_stay_in_the_space(fixed):
    space = _space(fixed_attention=fixed)
    rng = np.random.default_rng(0)
    population = seeds(BASE, HEAD_DIM, 8.0, space)
    for _ in range(300):
        a, b = (population[i] for i in rng.choice(len(population), 2, replace=False))
        child = mutate(a, space, rng, rate=0.6, sigma=1.5, attention_sigma=0.8) if rng.random() < 0.5 \
            else crossover(a, b, space, rng)
        assert space.contains(child), child
        population.append(child)
    attentions = {c.attention_factor for c in population}
    assert attentions == {1.25} if fixed else len(attentions) > 10


def test_mutation_changes_the_candidate_and_searches_the_attention_scale():
    space, rng = _space(), np.random.default_rng(1)
    parent = seeds(BASE, HEAD_DIM, 8.0, space)[2]
    children = [mutate(parent, space, rng) for _ in range(20)]
    assert all(c.key != parent.key for c in children)
    assert any(c.attention_factor != parent.attention_factor for c in children)


def test_candidates_round_trip_through_their_records():
    c = Candidate((1.0, 2.5), 1.2, "mutation")
    assert Candidate.from_record(c.record()) == c and Candidate.from_record(c.record()).origin == "mutation"


def test_a_candidate_becomes_a_longrope_spec_that_is_plain_rope_up_to_l0():
    spec = to_spec(Candidate((1.0, 2.0, 4.0), 1.3), BASE, 4.0)
    assert spec.method == "longrope" and spec.short_factor == (1.0, 1.0, 1.0) and spec.attention_factor == 1.3
    assert spec.original_max_position_embeddings == 256 and spec.factor == 4.0


def test_space_refuses_bad_bounds():
    with pytest.raises(ValueError, match="`max_factor`"):
        Space(pairs=4, max_factor=0.5)
    with pytest.raises(ValueError, match="`fixed_attention_scale`"):
        Space(pairs=4, max_factor=4.0, fixed_attention=0.0)
