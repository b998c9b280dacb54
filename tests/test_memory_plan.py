"""The memory planner's arithmetic: parameter counts against real models, what each strategy divides or adds, the
chunked loss, and the fit check's three answers."""

import json
from pathlib import Path

import pytest

from ropescale import memory_plan as mp
from ropescale.memory_plan import Architecture, EvalShape, TrainShape, estimate
from ropescale.train.loss import auto_chunk_size

from tests.conftest import tiny_llama_config, tiny_model

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def _config(name: str) -> dict:
    return json.loads((CONFIGS / name / "config.json").read_text())


@pytest.mark.parametrize("tied,kv_heads", [(False, 2), (True, 4)])
def test_parameters_equal_those_of_the_built_model(tied, kv_heads):
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(tie_word_embeddings=tied, num_key_value_heads=kv_heads)
    model = LlamaForCausalLM(config)
    assert Architecture.from_config(config).parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "qwen3"])
def test_parameters_of_other_architectures(arch):
    model = tiny_model(arch)
    assert Architecture.from_config(model.config).parameters == sum(p.numel() for p in model.parameters())


def test_shipped_configs_have_the_published_sizes():
    # Meta's and Qwen's model cards: 8,030,261,248 and 7,615,616,512 parameters
    assert Architecture.from_config(_config("llama-3-8b")).parameters == 8_030_261_248
    assert Architecture.from_config(_config("qwen2.5-7b-instruct")).parameters == 7_615_616_512


def test_lora_trainable_parameters_equal_peft_s():
    from transformers import LlamaForCausalLM

    from ropescale.train.lora import add_lora, count_parameters

    config = tiny_llama_config()
    model = add_lora(LlamaForCausalLM(config), 4, None, list(mp.LORA_TARGETS), ["embed", "norm"])
    arch = Architecture.from_config(config)
    assert count_parameters(model)[0] == arch.lora_parameters(4) + arch.trained_beside_lora()


def test_a_full_fine_tune_on_cpu_costs_16_bytes_per_parameter():
    arch = Architecture.from_config(_config("llama-3-8b"))
    parts = estimate(arch, TrainShape(seq_len=16)).parts
    assert parts["weights"] == 4 * arch.parameters and parts["gradients"] == 4 * arch.parameters
    assert parts["optimizer"] == 8 * arch.parameters


def test_zero_stages_shard_optimizer_then_gradients_then_weights():
    arch = Architecture.from_config(_config("llama-3-8b"))
    est = {s: estimate(arch, TrainShape(seq_len=1024, gpus=8, zero_stage=s), "cuda").parts for s in range(4)}
    p = arch.parameters
    assert est[1]["optimizer"] == 12 * p // 8 and est[1]["gradients"] == 2 * p     # bf16 + fp32 master, m, v
    assert est[2]["gradients"] == 2 * p // 8 and est[2]["weights"] == 2 * p
    gathered = 2 * max(arch.layer_parameters, arch.embedding_parameters) * 2   # this one and the prefetched one
    assert est[3]["weights"] == 2 * p // 8 + gathered
    totals = [sum(e.values()) for e in est.values()]
    assert totals == sorted(totals, reverse=True)


def test_sequence_parallel_divides_activations_and_adds_the_all_to_all_buffers():
    arch = Architecture.from_config(_config("llama-3-8b"))
    one = estimate(arch, TrainShape(seq_len=65536, gpus=8, zero_stage=3), "cuda").parts["activations"]
    eight = estimate(arch, TrainShape(seq_len=65536, gpus=8, zero_stage=3, sequence_parallel=8), "cuda")
    buffers = mp.ulysses_buffers(arch) * 65536 // 8 * 2
    assert eight.parts["activations"] == pytest.approx(one / 8 + buffers, rel=1e-6)


def test_checkpointing_keeps_one_layer_instead_of_all():
    arch = Architecture.from_config(_config("llama-3-8b"))
    on = estimate(arch, TrainShape(seq_len=4096)).parts["activations"]
    off = estimate(arch, TrainShape(seq_len=4096, gradient_checkpointing=False)).parts["activations"]
    saved = mp.layer_saved(arch) * 4096 * 4 * mp.ACTIVATION_FACTOR["train"]   # fp32 on CPU
    assert off - on == pytest.approx((arch.num_layers - 1) * saved, abs=2)


def test_the_loss_chunk_is_the_one_train_loss_uses():
    arch = Architecture.from_config(_config("llama-3-8b"))
    chunk = auto_chunk_size(2, arch.vocab_size)
    assert mp.loss_chunk_elements(arch, 2, 131072, None) == 2 * chunk * arch.vocab_size
    assert mp.loss_chunk_elements(arch, 1, 100, None) == 100 * arch.vocab_size   # shorter than a chunk
    assert mp.loss_chunk_elements(arch, 1, 131072, 64) == 64 * arch.vocab_size


def test_passkey_holds_two_kv_caches_and_perplexity_none():
    arch = Architecture.from_config(_config("llama-3-8b"))
    one = estimate(arch, EvalShape("prefill", 8192), "cpu").parts["kv_cache"]
    assert one == 2 * arch.num_layers * arch.kv_dim * 8192 * 4
    assert estimate(arch, EvalShape("passkey", 8192), "cpu").parts["kv_cache"] == 2 * one
    assert "kv_cache" not in estimate(arch, EvalShape("window", 8192), "cpu").parts
    assert estimate(arch, EvalShape("window", 8192, models=2), "cpu", 2).parts["weights"] == 4 * arch.parameters


def test_estimates_grow_with_length_and_batch():
    arch = Architecture.from_config(_config("qwen2.5-7b-instruct"))
    totals = [estimate(arch, TrainShape(seq_len=n, batch_size=b)).total for n, b in ((1024, 1), (4096, 1), (4096, 2))]
    assert totals == sorted(totals) and len(set(totals)) == 3


@pytest.mark.parametrize("bad", [dict(seq_len=0), dict(seq_len=8, zero_stage=4), dict(seq_len=8, gpus=4,
                                                                                        sequence_parallel=3)])
def test_bad_shapes_name_the_field(bad):
    with pytest.raises(ValueError, match="`"):
        TrainShape(**bad)


def test_options_are_ordered_by_degree_then_stage_and_respect_the_heads():
    arch = Architecture.from_config(_config("qwen2.5-7b-instruct"))   # 28 heads: no degree 8
    found = mp.options(arch, TrainShape(seq_len=131072, gpus=8))
    assert sorted({o.sequence_parallel for o in found}) == [1, 2, 4]
    limit = int(80 * mp.GiB)
    best = mp.smallest_fit(found, limit)
    assert best.fits(limit)
    assert not any(o.fits(limit) for o in found[: found.index(best)])


def _fake_memory(monkeypatch, n_bytes):
    monkeypatch.setattr(mp, "available_memory", lambda device="cpu": n_bytes)


def test_check_fits_refuses_in_one_line_with_the_estimate_and_the_knobs(monkeypatch):
    est = mp.Estimate({"weights": 3 * mp.GiB, "activations": 2 * mp.GiB})
    _fake_memory(monkeypatch, 4 * mp.GiB)
    with pytest.raises(ValueError) as err:
        mp.check_fits(est, "cpu", "a training step", "a shorter `seq_len`")
    text = str(err.value)
    assert "\n" not in text and "5 GiB" in text and "4 GiB" in text and "`seq_len`" in text and "`force`" in text
    assert mp.check_fits(est, "cpu", "a training step", "knobs", force=True) is None


def test_check_fits_warns_above_85_percent_and_is_quiet_below(monkeypatch, capsys):
    est = mp.Estimate({"weights": 9 * mp.GiB})
    _fake_memory(monkeypatch, 10 * mp.GiB)
    assert "90%" in mp.check_fits(est, "cpu", "x", "k")
    assert capsys.readouterr().err.count("\n") == 1
    _fake_memory(monkeypatch, 20 * mp.GiB)
    assert mp.check_fits(est, "cpu", "x", "k") is None and capsys.readouterr().err == ""


def test_available_memory_reads_meminfo():
    found = mp.available_memory("cpu")
    if not Path("/proc/meminfo").exists():
        assert found is None
        return
    total = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < found <= total


def test_architecture_of_a_config_without_sizes_is_a_value_error():
    with pytest.raises(ValueError, match="hidden_size"):
        Architecture.from_config({"model_type": "llama", "num_hidden_layers": 2})
