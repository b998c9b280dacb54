"""Properties that tie the methods to each other, frozen numbers, round trips and the transformers init function."""

import math

import pytest
import torch
from transformers import LlamaConfig

from ropescale.rope import METHODS, RopeSpec, frequencies, hf_init_function
from ropescale.rope.methods import default_inv_freq

HEAD_DIM = 128
L0 = 4096


def _spec(method, **kw):
    return RopeSpec(method=method, **kw)


def _default(theta=10000.0, head_dim=HEAD_DIM, partial=1.0):
    return frequencies(_spec("default", rope_theta=theta, partial_rotary_factor=partial), head_dim)[0]


def _close(a, b, rtol=1e-6):
    return torch.allclose(a, b, rtol=rtol, atol=0)


# one valid spec of every method, used by the round-trip and registry tests
EXAMPLES = {
    "default": _spec("default", rope_theta=500000.0),
    "linear": _spec("linear", factor=4.0, original_max_position_embeddings=L0),
    "ntk": _spec("ntk", factor=8.0, original_max_position_embeddings=L0, partial_rotary_factor=0.5),
    "dynamic": _spec("dynamic", factor=2.0, original_max_position_embeddings=L0),
    "ntk-by-parts": _spec("ntk-by-parts", factor=16.0, original_max_position_embeddings=L0, beta_fast=16.0),
    "yarn": _spec("yarn", factor=32.0, original_max_position_embeddings=L0, mscale=1.0, mscale_all_dim=0.707,
                  truncate=False, rope_theta=150000.0),
    "dynamic-yarn": _spec("dynamic-yarn", factor=8.0, original_max_position_embeddings=L0),
    "llama3": _spec("llama3", factor=8.0, original_max_position_embeddings=8192, low_freq_factor=1.0,
                    high_freq_factor=4.0, rope_theta=500000.0),
    "longrope": _spec("longrope", factor=32.0, original_max_position_embeddings=L0,
                      short_factor=[1.0 + i / 100 for i in range(64)], long_factor=[1.0 + i / 4 for i in range(64)]),
    "abf": _spec("abf", rope_theta=1e6, factor=4.0, original_max_position_embeddings=L0),
}


def test_registry_has_the_ten_methods_each_with_a_documented_function():
    assert set(METHODS) == set(EXAMPLES) and len(METHODS) == 10
    for name, method in METHODS.items():
        assert method.fn.__doc__ and "transformers" in method.fn.__doc__, name
        assert method.description and "\n" not in method.description
        inv_freq, scale = frequencies(EXAMPLES[name], HEAD_DIM)
        assert inv_freq.dtype == torch.float32 and inv_freq.shape == (int(HEAD_DIM * EXAMPLES[name].partial_rotary_factor) // 2,)
        assert isinstance(scale, float)


@pytest.mark.parametrize("factor", [1.0, 2.0, 8.0, 40.0])
def test_linear_is_default_divided_by_factor(factor):
    inv_freq, scale = frequencies(_spec("linear", factor=factor), HEAD_DIM)
    assert _close(inv_freq, _default() / factor) and scale == 1.0


@pytest.mark.parametrize("seq_len", [None, 1, 100, L0 - 1, L0])
def test_dynamic_is_default_up_to_original_length(seq_len):
    inv_freq, scale = frequencies(_spec("dynamic", factor=4.0, original_max_position_embeddings=L0), HEAD_DIM, seq_len)
    assert _close(inv_freq, _default()) and scale == 1.0


def test_dynamic_grows_its_base_past_original_length():
    spec = _spec("dynamic", factor=2.0, original_max_position_embeddings=L0)
    at_2l0, _ = frequencies(spec, HEAD_DIM, 2 * L0)
    # θ' = θ·(s·l/L0 − (s−1))^(d/(d−2)) = 10000·3^(128/126) at l = 2·L0
    assert _close(at_2l0, _default(10000.0 * 3.0 ** (128 / 126)))


@pytest.mark.parametrize("factor,partial", [(2.0, 1.0), (16.0, 1.0), (4.0, 0.5)])
def test_ntk_is_default_with_the_ntk_base(factor, partial):
    d = int(HEAD_DIM * partial)
    inv_freq, _ = frequencies(_spec("ntk", factor=factor, partial_rotary_factor=partial), HEAD_DIM)
    assert _close(inv_freq, _default(10000.0 * factor ** (d / (d - 2)), partial=partial))
    # the lowest frequency is scaled exactly like PI, the highest not at all (why the exponent is d/(d−2))
    plain = _default(partial=partial)
    assert math.isclose(float(inv_freq[-1]), float(plain[-1]) / factor, rel_tol=1e-5)
    assert float(inv_freq[0]) == float(plain[0]) == 1.0


@pytest.mark.parametrize("factor", [2.0, 16.0, 64.0])
def test_ntk_by_parts_is_yarn_with_attention_factor_1(factor):
    parts, parts_scale = frequencies(_spec("ntk-by-parts", factor=factor, original_max_position_embeddings=L0), HEAD_DIM)
    yarn, _ = frequencies(_spec("yarn", factor=factor, original_max_position_embeddings=L0, attention_factor=1.0), HEAD_DIM)
    assert torch.equal(parts, yarn) and parts_scale == 1.0


@pytest.mark.parametrize("factor,theta,l0", [(2.0, 10000.0, 4096), (16.0, 10000.0, 4096), (32.0, 500000.0, 8192),
                                             (4.0, 1e6, 2048)])
def test_yarn_lies_between_linear_and_default(factor, theta, l0):
    yarn, _ = frequencies(_spec("yarn", factor=factor, original_max_position_embeddings=l0, rope_theta=theta), HEAD_DIM)
    plain = _default(theta)
    linear = plain / factor
    assert bool((yarn <= plain * (1 + 1e-6)).all() and (yarn >= linear * (1 - 1e-6)).all())


@pytest.mark.parametrize("seq_len", [None, 1000, L0, L0 + 1, 3 * L0, 10_000, 16 * L0])
def test_dynamic_yarn_at_length_l_is_yarn_with_s_max_1_l_over_l0(seq_len):
    spec = _spec("dynamic-yarn", factor=16.0, original_max_position_embeddings=L0, beta_fast=16.0)
    s = 1.0 if seq_len is None else max(1.0, seq_len / L0)
    ours = frequencies(spec, HEAD_DIM, seq_len)
    yarn = frequencies(_spec("yarn", factor=s, original_max_position_embeddings=L0, beta_fast=16.0), HEAD_DIM)
    assert torch.equal(ours[0], yarn[0]) and ours[1] == yarn[1]


def test_abf_is_default_with_the_new_theta():
    inv_freq, scale = frequencies(_spec("abf", rope_theta=1e6, factor=4.0), HEAD_DIM)
    assert torch.equal(inv_freq, _default(1e6)) and scale == 1.0


def test_longrope_switches_to_long_factors_past_original_length():
    spec = EXAMPLES["longrope"]
    short, scale = frequencies(spec, HEAD_DIM, L0)
    long, _ = frequencies(spec, HEAD_DIM, L0 + 1)
    assert _close(short, _default() / torch.tensor(spec.short_factor))
    assert _close(long, _default() / torch.tensor(spec.long_factor))
    assert math.isclose(scale, math.sqrt(1 + math.log(32.0) / math.log(L0)))
    # transformers' precedence: an explicit attention_factor wins over the one derived from factor
    explicit = RopeSpec(**{**_fields(spec), "attention_factor": 1.5})
    assert frequencies(explicit, HEAD_DIM)[1] == 1.5


def _fields(spec):
    return {k: getattr(spec, k) for k in spec.__dataclass_fields__}


def test_yarn_snapshot_llama2_paper_numbers():
    # YaRN paper (Peng et al. 2023) with Llama 2: head_dim 128, θ 10000, L0 4096, s 16. The reference
    # (shared/reference/yarn-paper-and-repo.md §2.4, §2.5) derives the correction range (20, 46) from the raw
    # correction dims 20.94 / 45.03 with floor/ceil, and √(1/t) = 0.1·ln 16 + 1 = 1.2773.
    spec = _spec("yarn", factor=16.0, original_max_position_embeddings=4096)
    inv_freq, scale = frequencies(spec, 128)
    plain = _default()
    assert round(scale, 4) == 1.2773
    assert torch.equal(inv_freq[:21], plain[:21])                   # pairs 0…20: extrapolated (unchanged)
    assert _close(inv_freq[46:], plain[46:] / 16)                   # pairs 46…63: fully interpolated (÷ s)
    middle = inv_freq[21:46]                                        # pairs 21…45: blended, strictly between
    assert bool((middle < plain[21:46]).all() and (middle > plain[21:46] / 16).all())
    # a few values, produced by this implementation (fp32) when it was written and checked then against the
    # float64 formula θ^(−2i/d)·((1−γ_i) + γ_i/s), γ_i = clamp((i−20)/26, 0, 1), to ≤ 3e-7 relative
    frozen = {0: 1.0, 10: 0.23713736236095428, 20: 0.05623412877321243, 21: 0.04694085940718651,
              33: 0.004600435495376587, 45: 0.00015177164459601045, 46: 8.334509038832039e-05,
              63: 7.217387064883951e-06}
    for index, value in frozen.items():
        assert math.isclose(float(inv_freq[index]), value, rel_tol=1e-6), index


@pytest.mark.parametrize("method", list(EXAMPLES))
def test_to_hf_from_hf_round_trips(method):
    spec = EXAMPLES[method]
    params = spec.to_hf(HEAD_DIM)
    assert params["rope_type"] == METHODS[method].hf_type and "rope_theta" in params
    assert RopeSpec.from_hf(params) == spec
    theta, scaling = spec.to_legacy_hf(HEAD_DIM)
    assert "rope_theta" not in scaling
    assert RopeSpec.from_hf({"rope_theta": theta, "rope_scaling": scaling}) == spec


@pytest.mark.parametrize("method", list(EXAMPLES))
def test_round_trip_through_a_saved_transformers_config(method, tmp_path):
    spec = EXAMPLES[method]
    max_pos = spec.max_position_embeddings() if spec.original_max_position_embeddings else 4096
    config = LlamaConfig(hidden_size=HEAD_DIM * 2, num_attention_heads=2, head_dim=HEAD_DIM,
                         max_position_embeddings=max_pos, rope_parameters=spec.to_hf(HEAD_DIM))
    config.save_pretrained(tmp_path)
    assert RopeSpec.from_hf(LlamaConfig.from_pretrained(tmp_path)) == spec


def test_methods_that_use_l0_always_write_it():
    for method, spec in EXAMPLES.items():
        if "original_max_position_embeddings" in METHODS[method].parameters and METHODS[method].hf_type != "dynamic":
            assert spec.to_hf(HEAD_DIM)["original_max_position_embeddings"] == spec.original_max_position_embeddings


@pytest.mark.parametrize("seq_len", [None, 100, L0, L0 + 1, 5 * L0, torch.tensor(3 * L0 + 7)])
def test_hf_init_function_for_dynamic_yarn_equals_our_math(seq_len):
    spec = EXAMPLES["dynamic-yarn"]
    config = LlamaConfig(hidden_size=HEAD_DIM * 2, num_attention_heads=2, head_dim=HEAD_DIM,
                         max_position_embeddings=spec.max_position_embeddings(), rope_parameters=spec.to_hf())
    init = hf_init_function("dynamic-yarn")
    theirs, their_scale = init(config, device="cpu", seq_len=seq_len)
    ours, our_scale = frequencies(spec, HEAD_DIM, None if seq_len is None else int(seq_len))
    assert torch.equal(theirs, ours) and their_scale == our_scale


def test_hf_init_function_refuses_a_config_of_another_method():
    config = LlamaConfig(hidden_size=256, num_attention_heads=2, rope_parameters=EXAMPLES["yarn"].to_hf())
    with pytest.raises(ValueError, match="dynamic-yarn"):
        hf_init_function("dynamic-yarn")(config)
    with pytest.raises(ValueError, match="method must be one of"):
        hf_init_function("nope")


def test_default_frequencies_helper_matches_plain_formula():
    expected = torch.tensor([10000.0 ** (-2 * i / 128) for i in range(64)], dtype=torch.float64)
    assert torch.allclose(default_inv_freq(10000.0, 128).double(), expected, rtol=1e-6, atol=0)


def test_dynamic_yarn_registered_in_transformers_follows_the_sequence_length(monkeypatch):
    # why max_position_embeddings() is L0 for dynamic-yarn: transformers' dynamic_rope_update recomputes only
    # past max_position_embeddings, so with L0 there the rotary embedding tracks s = l/L0 from L0 on
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    monkeypatch.setitem(ROPE_INIT_FUNCTIONS, "dynamic_yarn", hf_init_function("dynamic-yarn"))
    spec = RopeSpec(method="dynamic-yarn", factor=8.0, original_max_position_embeddings=256)
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, head_dim=32,
                         max_position_embeddings=spec.max_position_embeddings(), rope_parameters=spec.to_hf())
    rotary = LlamaRotaryEmbedding(config)
    x = torch.zeros(1, 1, 32)
    for length in (100, 700, 1500):
        rotary(x, torch.arange(length)[None])
        inv_freq, scale = frequencies(spec, 32, max(length, 256))
        assert torch.equal(rotary.inv_freq, inv_freq) and rotary.attention_scaling == scale, length
