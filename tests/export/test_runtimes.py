"""vLLM and llama.cpp settings: flags and metadata per method, and what each runtime loses."""

import json
import math

import pytest
import torch

from ropescale.export.runtimes import llamacpp_settings, static_rope_parameters, vllm_settings
from ropescale.rope import RopeSpec, frequencies
from ropescale.rope.methods import default_inv_freq

YARN16 = RopeSpec(method="yarn", factor=16.0, original_max_position_embeddings=4096)


def test_vllm_yarn_override_is_complete():
    settings = vllm_settings(YARN16, 65536)
    assert settings["hf_overrides"] == {
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0,
                            "original_max_position_embeddings": 4096},
        "max_position_embeddings": 65536}
    flags = settings["flags"]
    assert flags[0] == "--hf-overrides" and json.loads(flags[1]) == settings["hf_overrides"]
    assert flags[2:] == ["--max-model-len", "65536"] and settings["lossy"] == []


def test_vllm_linear_max_positions_is_before_scaling():
    # vLLM multiplies max_position_embeddings by factor for linear: the override must be the unscaled length
    settings = vllm_settings(RopeSpec(method="linear", factor=4.0), 16384)
    assert settings["hf_overrides"]["max_position_embeddings"] == 4096


def test_ntk_is_served_as_default_without_provenance_keys():
    spec = RopeSpec(method="ntk", factor=4.0, original_max_position_embeddings=4096)
    params = vllm_settings(spec, 16384, head_dim=128)["hf_overrides"]["rope_parameters"]
    assert params == {"rope_type": "default", "rope_theta": 10000.0 * 4.0 ** (128 / 126)}
    flags = llamacpp_settings(spec, 16384, head_dim=128)["flags"]
    assert flags[:2] == ["--rope-freq-base", repr(10000.0 * 4.0 ** (128 / 126))] and flags[-2:] == ["-c", "16384"]


def test_dynamic_is_served_statically_at_the_target_length():
    spec = RopeSpec(method="dynamic", factor=2.0, original_max_position_embeddings=4096)
    params, lossy = static_rope_parameters(spec, 8192, head_dim=128)
    served, _ = frequencies(RopeSpec.from_hf(params), 128)
    assert torch.equal(served, frequencies(spec, 128, 8192)[0]) and "statically" in lossy[0]
    with pytest.raises(ValueError, match="head_dim"):
        vllm_settings(spec, 8192)


def test_dynamic_yarn_is_served_as_yarn_at_the_target_length():
    spec = RopeSpec(method="dynamic-yarn", factor=16.0, original_max_position_embeddings=4096)
    settings = vllm_settings(spec, 32768)
    assert settings["hf_overrides"]["rope_parameters"]["rope_type"] == "yarn"
    assert settings["hf_overrides"]["rope_parameters"]["factor"] == 8.0 and settings["lossy"]


def test_llamacpp_yarn_flags_and_gguf():
    settings = llamacpp_settings(YARN16, 65536, head_dim=128)
    assert settings["flags"] == ["--rope-scaling", "yarn", "--rope-scale", "16", "--yarn-orig-ctx", "4096",
                                 "-c", "65536"]
    gguf = settings["gguf"]
    assert gguf["llama.rope.scaling.type"] == "yarn" and gguf["llama.rope.scaling.original_context_length"] == 4096
    assert gguf["llama.context_length"] == 65536 and "llama.rope.scaling.attn_factor" not in gguf
    assert settings["lossy"] == []


def test_llamacpp_linear_flags():
    flags = llamacpp_settings(RopeSpec(method="linear", factor=4.0), 16384)["flags"]
    assert flags == ["--rope-scaling", "linear", "--rope-scale", "4", "-c", "16384"]


def test_llamacpp_reports_what_yarn_loses():
    spec = RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=4096, truncate=False,
                    beta_fast=16.0, mscale=1.0, mscale_all_dim=1.0)
    settings = llamacpp_settings(spec, 16384)
    assert settings["flags"][6:10] == ["--yarn-beta-fast", "16", "-c", "16384"]
    assert any("truncate" in note for note in settings["lossy"])
    # mscale == mscale_all_dim gives attention scale 1; llama.cpp applies 0.1 ln s + 1 unless the GGUF key undoes it
    assert math.isclose(settings["gguf"]["llama.rope.scaling.attn_factor"], 1 / (0.1 * math.log(4.0) + 1))
    parts = llamacpp_settings(RopeSpec(method="ntk-by-parts", factor=4.0, original_max_position_embeddings=4096),
                              16384)
    assert any("attention scale" in note for note in parts["lossy"])


def test_llamacpp_llama3_divisors_reproduce_our_frequencies():
    spec = RopeSpec(method="llama3", rope_theta=500000.0, factor=8.0, original_max_position_embeddings=8192,
                    low_freq_factor=1.0, high_freq_factor=4.0)
    settings = llamacpp_settings(spec, 131072, head_dim=128)
    divisors = torch.tensor(settings["gguf"]["rope_freqs.weight"])
    assert torch.allclose(default_inv_freq(500000.0, 128) / divisors, frequencies(spec, 128)[0], rtol=1e-6, atol=0)
    assert settings["flags"] == ["-c", "131072"] and settings["lossy"]
