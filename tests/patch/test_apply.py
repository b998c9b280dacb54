"""apply(): factor 1 is the identity; a patched model equals one built natively with the same rope config."""

import pytest
import torch
from transformers import LlamaForCausalLM

import ropescale as rs
from ropescale.model_info import ModelInfo, spec_for_model
from tests.conftest import tiny_llama_config

IDS = torch.randint(0, 97, (1, 150), generator=torch.Generator().manual_seed(0))  # > L0 = 64


@pytest.mark.parametrize("method", ["linear", "ntk", "dynamic", "yarn", "dynamic-yarn", "ntk-by-parts", "abf"])
def test_factor_one_is_bit_identical(tiny_llama, method):
    # dynamic types rescale by the current length even at factor 1 (transformers' formula uses l/L0), so they
    # are the identity only up to L0
    ids = IDS[:, :64] if "dynamic" in method else IDS
    before = tiny_llama(ids).logits
    after = rs.apply(tiny_llama, spec_for_model(tiny_llama, method, 1.0))(ids).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("method,extra", [("linear", {}), ("yarn", {}), ("dynamic", {}),
                                          ("llama3", {"low_freq_factor": 1.0, "high_freq_factor": 4.0})])
def test_patched_equals_native(tiny_llama, method, extra):
    spec = spec_for_model(tiny_llama, method, 4.0, **extra)
    rs.apply(tiny_llama, spec)
    native_config = tiny_llama_config()
    native_config.rope_parameters = spec.to_hf(16)
    native_config.max_position_embeddings = spec.max_position_embeddings()
    native = LlamaForCausalLM(native_config).eval()
    native.load_state_dict(tiny_llama.state_dict())
    assert torch.allclose(tiny_llama(IDS).logits, native(IDS).logits, atol=1e-6)


def test_yarn_changes_logits_beyond_l0(tiny_llama):
    before = tiny_llama(IDS).logits
    after = rs.apply(tiny_llama, spec_for_model(tiny_llama, "yarn", 4.0))(IDS).logits
    assert not torch.allclose(before, after)


def test_model_without_rope_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="no rotary position embedding"):
        rs.apply(model, rs.RopeSpec(method="linear", factor=2.0))


def test_spec_type_checked(tiny_llama):
    with pytest.raises(TypeError, match="RopeSpec"):
        rs.apply(tiny_llama, {"rope_type": "yarn"})


def test_a_spec_without_l0_runs_from_the_models(tiny_llama):
    # RopeSpec(method="linear", factor=4.0) names no L0: the model's (64) is used, as the one spec_for_model builds
    bare = rs.apply(tiny_llama, rs.RopeSpec(method="linear", factor=4.0))(IDS).logits
    assert tiny_llama.config.max_position_embeddings == 64
    assert ModelInfo.from_config(tiny_llama).rope == spec_for_model(tiny_llama_config(), "linear", 4.0)
    torch.manual_seed(0)
    fresh = LlamaForCausalLM(tiny_llama_config()).eval()
    fresh.load_state_dict(tiny_llama.state_dict())
    assert torch.equal(bare, rs.apply(fresh, spec_for_model(fresh, "linear", 4.0))(IDS).logits)
