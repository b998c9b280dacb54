"""Parity with transformers 5: our frequencies equal `ROPE_INIT_FUNCTIONS` on many seeded random configs.

Each case builds a `transformers.LlamaConfig` from `spec.to_hf()` and `spec.max_position_embeddings()`, i.e. the
config a user would save, so the export path is checked together with the math.
"""

import logging
import math
import random

import pytest
import torch
from transformers import LlamaConfig, PhiConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

from ropescale.rope import RopeSpec, frequencies

MAX_REL_ERR = 1e-6
CASES_PER_METHOD = 60


@pytest.fixture(autouse=True)
def _quiet_transformers():
    # transformers logs a warning for llama3 with factor 1 (max_position_embeddings not above L0); not our subject
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _random_spec(method: str, rng: random.Random) -> tuple[RopeSpec, int, int | None]:
    """A random spec of `method`, a head_dim and a seq_len (None or around L0)."""
    head_dim = rng.choice([16, 32, 64, 80, 96, 128, 256])
    partial = rng.choice([1.0, 1.0, 0.5, 0.25, 0.75])
    if int(head_dim * partial) % 2 or int(head_dim * partial) <= 2:
        partial = 1.0
    l0 = rng.choice([256, 2048, 4096, 8192, 32768, 3000])
    kw = dict(method=method, rope_theta=rng.choice([10000.0, 500000.0, 1e6, 1234.5, 150000.0]),
              factor=rng.choice([1.0, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 40.0, 3.3]),
              original_max_position_embeddings=l0, partial_rotary_factor=partial)
    if method == "yarn":
        if rng.random() < 0.5:
            kw.update(beta_fast=rng.choice([32.0, 16.0, 64.0, 8.0]), beta_slow=rng.choice([1.0, 2.0, 0.5]))
        if rng.random() < 0.3:
            kw.update(mscale=rng.choice([1.0, 0.707, 0.0]), mscale_all_dim=rng.choice([1.0, 0.707, 0.5]))
        if rng.random() < 0.3:
            kw.update(attention_factor=rng.choice([1.0, 0.8, 1.3]))
        if rng.random() < 0.5:
            kw.update(truncate=rng.choice([True, False]))
    if method == "llama3":
        low = rng.choice([1.0, 0.5, 2.0])
        kw.update(low_freq_factor=low, high_freq_factor=low * rng.choice([2.0, 4.0, 1.5]))
    if method == "longrope":
        n = int(head_dim * partial) // 2
        kw.update(short_factor=sorted(rng.uniform(1.0, 1.5) for _ in range(n)),
                  long_factor=sorted(rng.uniform(1.0, 40.0) for _ in range(n)))
        if rng.random() < 0.3:
            kw.update(attention_factor=rng.choice([1.0, 1.2]))
    seq_len = rng.choice([None, l0 // 2, l0, l0 + 1, 2 * l0, int(3.7 * l0)])
    return RopeSpec(**kw), head_dim, seq_len


def _llama_config(spec: RopeSpec, head_dim: int) -> LlamaConfig:
    return LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                       max_position_embeddings=spec.max_position_embeddings(), rope_parameters=spec.to_hf(head_dim))


def _max_rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.dtype == theirs.dtype == torch.float32 and ours.shape == theirs.shape
    return float(((ours.double() - theirs.double()).abs() / theirs.double().abs()).max())


@pytest.mark.parametrize("method", ["linear", "dynamic", "yarn", "llama3", "longrope"])
def test_matches_transformers_init_function(method):
    rng = random.Random(f"parity-{method}")
    worst = 0.0
    for _ in range(CASES_PER_METHOD):
        spec, head_dim, seq_len = _random_spec(method, rng)
        config = _llama_config(spec, head_dim)
        theirs, their_scale = ROPE_INIT_FUNCTIONS[method](config, seq_len=seq_len)
        ours, our_scale = frequencies(spec, head_dim, seq_len)
        worst = max(worst, _max_rel_err(ours, theirs))
        assert math.isclose(our_scale, their_scale, rel_tol=MAX_REL_ERR), (spec, seq_len)
    assert worst <= MAX_REL_ERR, f"{method}: max relative error {worst:.3g}"


@pytest.mark.parametrize("head_dim,rope_theta", [(128, 10000.0), (64, 500000.0), (96, 1e6), (16, 1234.5)])
def test_default_matches_llama_default(head_dim, rope_theta):
    spec = RopeSpec(method="default", rope_theta=rope_theta)
    config = _llama_config(RopeSpec(method="default", rope_theta=rope_theta, original_max_position_embeddings=4096),
                           head_dim)
    theirs, their_scale = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    ours, our_scale = frequencies(spec, head_dim)
    assert _max_rel_err(ours, theirs) <= MAX_REL_ERR and our_scale == their_scale == 1.0


@pytest.mark.parametrize("head_dim,partial", [(80, 0.4), (64, 0.5), (256, 0.25)])
def test_default_partial_rotary_matches_phi_default(head_dim, partial):
    # Llama's default ignores partial_rotary_factor; Phi's honours it, as our `default` does
    spec = RopeSpec(method="default", rope_theta=10000.0, partial_rotary_factor=partial)
    config = PhiConfig(hidden_size=head_dim * 2, num_attention_heads=2, rope_parameters=spec.to_hf())
    theirs, _ = PhiRotaryEmbedding.compute_default_rope_parameters(config)
    ours, _ = frequencies(spec, head_dim)
    assert ours.shape == (int(head_dim * partial) // 2,)
    assert _max_rel_err(ours, theirs) <= MAX_REL_ERR


@pytest.mark.parametrize("method", ["ntk", "abf", "ntk-by-parts"])
def test_exact_equivalents_load_in_transformers_with_our_numbers(method):
    # ntk/abf are written as rope_type "default", ntk-by-parts as "yarn": the model transformers builds from the
    # saved config must compute our frequencies
    rng = random.Random(f"equivalent-{method}")
    for _ in range(20):
        head_dim = rng.choice([32, 64, 128])
        kw = dict(method=method, rope_theta=rng.choice([10000.0, 500000.0]), factor=rng.choice([2.0, 8.0, 16.0]),
                  original_max_position_embeddings=rng.choice([2048, 4096]))
        spec = RopeSpec(**kw)
        config = _llama_config(spec, head_dim)
        init = (LlamaRotaryEmbedding.compute_default_rope_parameters if config.rope_parameters["rope_type"] ==
                "default" else ROPE_INIT_FUNCTIONS[config.rope_parameters["rope_type"]])
        theirs, their_scale = init(config)
        ours, our_scale = frequencies(spec, head_dim)
        assert _max_rel_err(ours, theirs) <= MAX_REL_ERR
        assert our_scale == their_scale
