"""RopeSpec validation (every error names its field), from_hf on every input shape, max_position_embeddings."""

import dataclasses

import pytest
from transformers import LlamaConfig

from ropescale.rope import METHODS, RopeSpec, frequencies

YARN = dict(method="yarn", factor=8.0, original_max_position_embeddings=4096)


@pytest.mark.parametrize("kwargs,field,allowed", [
    (dict(method="nope"), "method", "yarn"),
    (dict(method="linear", factor=0.5), "factor", ">= 1"),
    (dict(method="linear", factor=float("nan")), "factor", "finite"),
    (dict(method="linear", factor=float("inf")), "factor", "finite"),
    (dict(method="default", rope_theta=float("nan")), "rope_theta", "finite"),
    (dict(YARN, beta_fast=float("inf")), "beta_fast", "finite"),
    (dict(method="longrope", factor=2.0, original_max_position_embeddings=4096, short_factor=[1.0, float("nan")],
          long_factor=[1.0, 2.0]), "short_factor", "finite"),
    (dict(method="yarn", factor=8.0), "original_max_position_embeddings", "required"),
    (dict(method="dynamic", factor=2.0), "original_max_position_embeddings", "required"),
    (dict(method="ntk-by-parts", factor=2.0), "original_max_position_embeddings", "required"),
    (dict(method="dynamic-yarn", factor=2.0), "original_max_position_embeddings", "required"),
    (dict(method="llama3", factor=8.0, original_max_position_embeddings=8192, low_freq_factor=1.0),
     "high_freq_factor", "required"),
    (dict(method="longrope", factor=2.0, original_max_position_embeddings=4096, long_factor=[1.0]),
     "short_factor", "required"),
    (dict(YARN, beta_fast=1.0, beta_slow=2.0), "beta_fast", ">= beta_slow"),
    (dict(YARN, beta_fast=0.5), "beta_fast", ">= beta_slow"),
    (dict(YARN, beta_slow=-1.0), "beta_slow", "> 0"),
    (dict(method="llama3", factor=8.0, original_max_position_embeddings=8192, low_freq_factor=4.0,
          high_freq_factor=4.0), "high_freq_factor", "> low_freq_factor"),
    (dict(method="default", rope_theta=0.0), "rope_theta", "> 1"),
    (dict(method="default", rope_theta=-5.0), "rope_theta", "> 1"),
    (dict(method="default", partial_rotary_factor=0.0), "partial_rotary_factor", "(0, 1]"),
    (dict(method="default", partial_rotary_factor=1.5), "partial_rotary_factor", "(0, 1]"),
    (dict(YARN, attention_factor=0.0), "attention_factor", "> 0"),
    (dict(YARN, mscale=-1.0), "mscale", ">= 0"),
    (dict(method="linear", factor=2.0, original_max_position_embeddings=1), "original_max_position_embeddings",
     ">= 2"),
    (dict(method="linear", factor=2.0, beta_fast=32.0), "beta_fast", "not used by method 'linear'"),
    (dict(method="default", factor=2.0), "factor", "not used by method 'default'"),
])
def test_bad_values_raise_value_error_naming_the_field(kwargs, field, allowed):
    with pytest.raises(ValueError) as info:
        RopeSpec(**kwargs)
    message = str(info.value)
    assert field in message and allowed in message, message


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        RopeSpec(method="ntk_by_parts")
    assert all(name in str(info.value) for name in METHODS)


@pytest.mark.parametrize("kwargs,field", [
    (dict(method="linear", factor="2"), "factor"),
    (dict(method="linear", factor=True), "factor"),
    (dict(method="default", rope_theta=None), "rope_theta"),
    (dict(method=3), "method"),
    (dict(YARN, original_max_position_embeddings=4096.0), "original_max_position_embeddings"),
    (dict(YARN, truncate="yes"), "truncate"),
    (dict(method="longrope", factor=2.0, original_max_position_embeddings=4096, short_factor="1,2",
          long_factor=[1.0]), "short_factor"),
    (dict(method="longrope", factor=2.0, original_max_position_embeddings=4096, short_factor=[1.0, "x"],
          long_factor=[1.0]), "short_factor"),
])
def test_wrong_types_raise_type_error_naming_the_field(kwargs, field):
    with pytest.raises(TypeError, match=field):
        RopeSpec(**kwargs)


def test_values_are_normalised_so_equal_specs_compare_equal():
    a = RopeSpec(method="yarn", factor=8, original_max_position_embeddings=4096, rope_theta=10000)
    b = RopeSpec(**YARN)
    assert a == b and hash(a) == hash(b) and isinstance(a.factor, float)
    c = RopeSpec(method="longrope", factor=2, original_max_position_embeddings=4096, short_factor=[1, 2],
                 long_factor=(3.0, 4.0))
    assert c.short_factor == (1.0, 2.0) and isinstance(c.long_factor, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.factor = 2.0


@pytest.mark.parametrize("head_dim,partial,field", [(127, 1.0, "head_dim"), (62, 0.7, "partial_rotary_factor"),
                                                    (1, 1.0, "head_dim")])
def test_odd_rotary_dim_is_rejected_in_frequencies(head_dim, partial, field):
    with pytest.raises(ValueError, match=field):
        frequencies(RopeSpec(method="default", partial_rotary_factor=partial), head_dim)


def test_longrope_factor_list_length_is_checked_against_head_dim():
    spec = RopeSpec(method="longrope", factor=2.0, original_max_position_embeddings=4096, short_factor=[1.0] * 32,
                    long_factor=[1.0] * 31)
    assert frequencies(spec, 64)[0].shape == (32,)
    with pytest.raises(ValueError, match="long_factor.*32"):
        frequencies(spec, 64, seq_len=5000)
    with pytest.raises(ValueError, match="short_factor.*64"):
        frequencies(spec, 128)


@pytest.mark.parametrize("seq_len,error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("9", TypeError)])
def test_bad_seq_len(seq_len, error):
    with pytest.raises(error, match="seq_len"):
        frequencies(RopeSpec(**YARN), 128, seq_len)


def test_values_fp32_cannot_hold_raise_instead_of_returning_zeros():
    with pytest.raises(ValueError, match="rope_theta"):
        frequencies(RopeSpec(method="default", rope_theta=1e39), 128)
    with pytest.raises(ValueError, match="rope_theta"):
        frequencies(RopeSpec(method="ntk", rope_theta=1e300, factor=1e10), 128)
    with pytest.raises(ValueError, match="rotary dim > 2"):
        frequencies(RopeSpec(method="ntk", factor=2.0), 2)


# ---------------------------------------------------------------- from_hf input shapes


def test_from_hf_config_json_v5():
    config = {"max_position_embeddings": 131072, "hidden_size": 4096, "num_attention_heads": 32,
              "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192}}
    assert RopeSpec.from_hf(config) == RopeSpec(method="llama3", rope_theta=500000.0, factor=8.0,
                                                original_max_position_embeddings=8192, low_freq_factor=1.0,
                                                high_freq_factor=4.0)


@pytest.mark.parametrize("type_key", ["type", "rope_type"])
def test_from_hf_legacy_config_json(type_key):
    # Yarn-Llama-2-7b-128k style: legacy `type` and the old `finetuned` key (ignored)
    config = {"max_position_embeddings": 131072, "rope_theta": 10000.0,
              "rope_scaling": {type_key: "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                               "finetuned": True}}
    assert RopeSpec.from_hf(config) == RopeSpec(method="yarn", factor=32.0, original_max_position_embeddings=4096)


def test_from_hf_plain_model_and_transformers_object():
    assert RopeSpec.from_hf({"max_position_embeddings": 4096, "rope_theta": 10000.0}) == RopeSpec(method="default")
    config = LlamaConfig(rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 4})
    assert RopeSpec.from_hf(config) == RopeSpec(method="linear", rope_theta=500000.0, factor=4.0)


def test_from_hf_fills_l0_and_factor_as_transformers_does():
    # Phi-3: L0 at the top level wins; longrope factor defaults to max_position_embeddings / L0
    phi3 = {"max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
            "rope_scaling": {"type": "su", "short_factor": [1.0] * 48, "long_factor": [2.0] * 48}}
    spec = RopeSpec.from_hf(phi3)
    assert spec.method == "longrope" and spec.original_max_position_embeddings == 4096 and spec.factor == 32.0
    # dynamic: transformers uses max_position_embeddings as L0
    dynamic = {"max_position_embeddings": 2048, "rope_scaling": {"type": "dynamic", "factor": 2.0}}
    assert RopeSpec.from_hf(dynamic).original_max_position_embeddings == 2048


def test_from_hf_maps_vllm_ntk_and_our_dynamic_yarn():
    assert RopeSpec.from_hf({"rope_type": "ntk", "factor": 4.0, "rope_theta": 1e4}) == RopeSpec(method="ntk", factor=4.0)
    params = {"rope_type": "dynamic_yarn", "rope_theta": 1e4, "factor": 4.0, "original_max_position_embeddings": 2048}
    assert RopeSpec.from_hf(params).method == "dynamic-yarn"


def test_from_hf_rejects_nested_per_layer_configs():
    gemma3 = {"max_position_embeddings": 131072, "layer_types": ["sliding_attention", "full_attention"],
              "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                  "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}}
    with pytest.raises(ValueError, match="nested"):
        RopeSpec.from_hf(gemma3)
    with pytest.raises(ValueError, match="nested"):
        RopeSpec.from_hf(gemma3["rope_parameters"])


def test_from_hf_rejects_unknown_types_and_inputs():
    with pytest.raises(ValueError, match="rope_type 'mrope'"):
        RopeSpec.from_hf({"rope_type": "mrope", "rope_theta": 1e4})
    with pytest.raises(TypeError, match="from_hf"):
        RopeSpec.from_hf(42)
    with pytest.raises(ValueError, match="longrope.*factor"):
        RopeSpec.from_hf({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
                          "original_max_position_embeddings": 4096})


def test_from_hf_detects_an_equivalent_edited_after_export():
    spec = RopeSpec(method="ntk", factor=4.0)
    config = {"head_dim": 128, "max_position_embeddings": 16384, "rope_parameters": spec.to_hf(128)}
    assert RopeSpec.from_hf(config) == spec
    config["rope_parameters"]["rope_theta"] = 20000.0
    with pytest.raises(ValueError, match="rope_theta.*edited"):
        RopeSpec.from_hf(config)


def test_to_hf_needs_head_dim_for_ntk_only():
    with pytest.raises(ValueError, match="head_dim"):
        RopeSpec(method="ntk", factor=2.0).to_hf()
    assert RopeSpec(method="abf", rope_theta=1e6).to_hf() == {"rope_type": "default", "rope_theta": 1e6,
                                                              "ropescale_factor": 1.0, "ropescale_method": "abf"}


@pytest.mark.parametrize("method,expected", [
    ("yarn", 32768), ("ntk-by-parts", 32768), ("llama3", 32768), ("longrope", 32768), ("ntk", 32768),
    ("abf", 32768), ("linear", 4096), ("dynamic", 4096), ("dynamic-yarn", 4096)])
def test_max_position_embeddings(method, expected):
    extra = {"llama3": dict(low_freq_factor=1.0, high_freq_factor=4.0),
             "longrope": dict(short_factor=[1.0], long_factor=[1.0])}.get(method, {})
    spec = RopeSpec(method=method, factor=8.0, original_max_position_embeddings=4096, **extra)
    assert spec.max_position_embeddings() == expected
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        RopeSpec(method="linear", factor=2.0).max_position_embeddings()
