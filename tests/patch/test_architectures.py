"""apply() on every tested transformers RoPE architecture: invariance, dynamic updates, refusals."""

import pytest
import torch

import ropescale as rs
from ropescale.model_info import ModelInfo, spec_for_model
from ropescale.rope import frequencies, rotary_dim
from tests.conftest import TINY_ARCHS, tiny_config, tiny_model

L0 = 64
IDS = torch.randint(3, 97, (1, 100), generator=torch.Generator().manual_seed(0))  # > L0
STATIC = ["linear", "ntk", "yarn", "ntk-by-parts", "abf", "llama3"]
METHODS_FOR = {arch: (["ntk", "abf"] if arch == "phi3" else STATIC) for arch in TINY_ARCHS}
LLAMA3 = {"low_freq_factor": 1.0, "high_freq_factor": 4.0}


def _spec(model, method, factor):
    return spec_for_model(model, method, factor, **(LLAMA3 if method == "llama3" else {}))


def _rotary(model):
    return next(m for m in model.modules() if hasattr(m, "inv_freq") and hasattr(m, "rope_type"))


@pytest.mark.parametrize("arch", list(TINY_ARCHS))
def test_factor_one_is_bit_identical_on_every_architecture(arch):
    model = tiny_model(arch)
    with torch.no_grad():
        before = model(IDS).logits
        for method in METHODS_FOR[arch]:
            rs.apply(model, _spec(model, method, 1.0))
            assert torch.equal(model(IDS).logits, before), method
        for method in ("dynamic", "dynamic-yarn") if arch != "phi3" else ():
            rs.apply(model, _spec(model, method, 1.0))
            assert torch.equal(model(IDS[:, :L0]).logits, before[:, :L0]), method  # dynamic: identity up to L0


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt_neox"])
@pytest.mark.parametrize("method", ["dynamic", "dynamic-yarn"])
def test_dynamic_methods_follow_the_sequence_length(arch, method):
    model = tiny_model(arch)
    spec = _spec(model, method, 4.0)
    rs.apply(model, spec)
    rotary, head_dim = _rotary(model), ModelInfo.from_config(model).head_dim
    for length in (40, 80, 100):  # transformers' dynamic_rope_update recomputes on growth past L0
        with torch.no_grad():
            model(IDS[:, :length])
        inv_freq, scale = frequencies(spec, head_dim, max(length, L0) if length > L0 else None)
        assert torch.allclose(rotary.inv_freq, inv_freq, rtol=1e-6, atol=0) and rotary.attention_scaling == scale
    assert rotary.inv_freq.shape[0] == rotary_dim(head_dim, spec.partial_rotary_factor) // 2


def test_dynamic_yarn_reset_restores_the_attention_scale():
    # transformers' reset branch (a sequence < L0 after a longer one) restores inv_freq but not
    # attention_scaling; our pre-hook restores it, so short-sequence logits are the same before and after
    model = tiny_model("llama")
    rs.apply(model, _spec(model, "dynamic-yarn", 4.0))
    rotary = _rotary(model)
    with torch.no_grad():
        short = model(IDS[:, :32]).logits
        model(IDS)
        assert rotary.attention_scaling > 1.0  # 0.1·ln(100/64) + 1
        assert torch.equal(model(IDS[:, :32]).logits, short) and rotary.attention_scaling == 1.0
        rotary._ropescale_reset_hook.remove()  # without the hook the scale stays stale: the bug is real
        model(IDS)
        assert not torch.allclose(model(IDS[:, :32]).logits, short, atol=1e-5)


def test_reset_hook_is_removed_when_a_static_method_replaces_a_dynamic_one():
    model = tiny_model("llama")
    rs.apply(model, _spec(model, "dynamic-yarn", 4.0))
    rs.apply(model, _spec(model, "yarn", 4.0))
    rotary = _rotary(model)
    assert rotary._ropescale_reset_hook is None and not rotary._forward_pre_hooks


def test_patched_config_is_what_transformers_builds_natively():
    from transformers import AutoModelForCausalLM

    for arch in ("qwen3", "gemma", "gpt_neox"):
        model = tiny_model(arch)
        rs.apply(model, _spec(model, "yarn", 4.0))
        native = AutoModelForCausalLM.from_config(model.config, attn_implementation="eager").eval()
        native.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert torch.allclose(model(IDS).logits, native(IDS).logits, atol=1e-6), arch


def test_phi3_refuses_methods_it_cannot_load_with_a_clear_message():
    model = tiny_model("phi3")
    before = dict(model.config.rope_parameters)
    with pytest.raises(ValueError, match=r"'phi3' accepts only rope types default, longrope.*`method`"):
        rs.apply(model, _spec(model, "yarn", 4.0))
    assert model.config.rope_parameters == before  # refused before anything changed
    short = tuple(1.0 for _ in range(8))
    rs.apply(model, spec_for_model(
        model, "longrope", 4.0, short_factor=short, long_factor=tuple(2.0 + i for i in range(8))))
    assert model.config.rope_parameters["rope_type"] == "longrope"
    assert model.config.original_max_position_embeddings == L0


@pytest.mark.parametrize("build,needle", [
    (lambda: __import__("transformers").GPT2LMHeadModel(__import__("transformers").GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=50)), "'gpt2' has no rotary position embedding"),
    (lambda: __import__("transformers").BertForMaskedLM(__import__("transformers").BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)),
     "'bert' has no rotary position embedding"),
    (lambda: __import__("transformers").Gemma3ForCausalLM(__import__("transformers").Gemma3TextConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64)), "per-layer-type rope config"),
])
def test_models_without_one_rope_are_refused(build, needle):
    with pytest.raises(ValueError, match=needle):
        rs.apply(build(), rs.RopeSpec(method="linear", factor=2.0))


def test_gpt_neox_partial_rotary_is_kept():
    model = tiny_model("gpt_neox")
    spec = _spec(model, "yarn", 4.0)
    assert spec.partial_rotary_factor == 0.25
    rs.apply(model, spec)
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert _rotary(model).inv_freq.shape == (4,)  # head_dim 32 · 0.25 / 2
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        rs.apply(model, rs.RopeSpec(method="linear", factor=2.0, partial_rotary_factor=0.5))


def test_importing_ropescale_before_transformers_registers_dynamic_yarn():
    # the other order (transformers first) is checked by the round-trip subprocess in tests/export/test_hf.py
    import subprocess
    import sys

    code = ("import sys, ropescale\nassert 'transformers' not in sys.modules\n"
            "from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS as F\nassert 'dynamic_yarn' in F")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_tiny_configs_are_what_they_claim():
    for arch in TINY_ARCHS:
        config = tiny_config(arch)
        assert config.num_hidden_layers == 2 and config.hidden_size == 64 and config.max_position_embeddings == L0
