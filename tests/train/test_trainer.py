"""End-to-end fine-tuning on tiny random Llamas (vocab 4096, L0 16 -> 128 tokens); each run takes about a second."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ropescale.train import FinetuneConfig, finetune
from ropescale.io import read_loss_csv
from ropescale.train.checkpoint import checkpoint_dirs
from ropescale.train.loop import RowOrder, clip_and_step, sample_indices


def _config(model, text, out, **kw):
    base = dict(model=str(model), data=str(text), output=str(out), method="yarn", factor=8.0, steps=3, lr=1e-3,
                warmup_steps=1, seed=0)
    return FinetuneConfig(**{**base, **kw})


def _weights(path):
    return load_file(str(path / "model.safetensors"))


# ------------------------------------------------------------------------------------------- pure pieces

def test_samples_of_a_step_do_not_depend_on_the_process_split():
    one = [i for m in range(2) for i in sample_indices(3, m, 0, 1, batch_size=2, grad_accum=2)]
    two = [i for m in range(2) for r in range(2) for i in sample_indices(3, m, r, 2, batch_size=1, grad_accum=2)]
    assert sorted(one) == sorted(two) == list(range(12, 16))


def test_row_order_is_a_seeded_permutation_per_epoch():
    order = RowOrder(5, seed=1)
    first, second = [order(i) for i in range(5)], [order(i) for i in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5))
    assert first == [RowOrder(5, seed=1)(i) for i in range(5)]


@pytest.mark.parametrize("max_norm", [1.0, None])
def test_gradient_clipping_bounds_a_huge_step(max_norm):
    from accelerate import Accelerator

    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    params = list(layer.parameters())
    opt = torch.optim.SGD(params, lr=1.0)   # SGD: the update is the (clipped) gradient itself
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    before = torch.cat([p.detach().flatten().clone() for p in params])
    (layer(torch.randn(4, 8)).pow(2).sum() * 1e6).backward()   # a huge loss
    norm = clip_and_step(Accelerator(cpu=True), params, opt, sched, max_norm)
    update = (torch.cat([p.detach().flatten() for p in params]) - before).norm()
    assert norm > 1e3
    if max_norm:
        assert update <= max_norm * (1 + 1e-5)
    else:
        assert update == pytest.approx(norm, rel=1e-4)   # without clipping the whole huge gradient is applied
    assert all(p.grad is None for p in params)


# ------------------------------------------------------------------------------------------- runs

def test_full_run_writes_curve_summary_and_a_native_checkpoint(tiny_train_model_dir, text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "run", save_every=2))
    rows = read_loss_csv(out / "loss.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["tokens"] == 128 * r["step"] for r in rows) and all(r["grad_norm"] > 0 for r in rows)
    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == 3 and summary["seq_len"] == 128 and summary["target_length"] == 128
    assert summary["final_loss"] == pytest.approx(rows[-1]["loss"], abs=1e-6)
    assert {"torch", "transformers", "accelerate"} <= set(summary["versions"])
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "yarn" and config["rope_scaling"]["factor"] == 8.0
    assert config["max_position_embeddings"] == 128 and config["use_cache"] is True
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.rope_parameters["factor"] == 8.0
    base, tuned = _weights(tiny_train_model_dir), _weights(out)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q], tuned[q])
    assert [p.name for p in checkpoint_dirs(out)] == ["step-0000002", "step-0000003"]
    assert json.loads((out / "ropescale.json").read_text())["finetuned"]["steps"] == 3   # via save_extended


@pytest.mark.parametrize("saved", [None, "yarn"])
def test_training_the_rope_as_saved_saves_it_unchanged(tiny_train_model_dir, text_file, tmp_path, saved):
    """Without `method` the model trains with the rope it has (here the base default rope, or a yarn ×8
    checkpoint from a first run): the final checkpoint keeps that rope and its length."""
    model = tiny_train_model_dir
    if saved:
        model = finetune(_config(model, text_file, tmp_path / "first", steps=1))
    out = finetune(_config(model, text_file, tmp_path / "again", method=None, factor=None, steps=1, seq_len=64))
    before = json.loads((model / "config.json").read_text())
    after = json.loads((out / "config.json").read_text())
    assert after["rope_parameters"] == before["rope_parameters"]
    assert after["max_position_embeddings"] == before["max_position_embeddings"]


def test_lora_trains_embeddings_and_norms_and_merges(tiny_train_model_dir, text_file, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "lora", lora_rank=4))
    printed = capsys.readouterr().out
    line = next(l for l in printed.splitlines() if l.startswith("trainable parameters:"))
    trainable, total = (int(x.replace(",", "")) for x in line.split(":")[1].split("(")[0].split(" of "))
    assert 0 < trainable < total
    tuned = _weights(out)
    assert not any("lora" in k for k in tuned)   # merged: a plain transformers checkpoint
    AutoModelForCausalLM.from_pretrained(out)
    base = _weights(tiny_train_model_dir)
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "model.norm.weight",
                "model.layers.1.input_layernorm.weight"):
        assert not torch.equal(base[key], tuned[key]), key          # adapters merged, embed and norms trained
    for key in ("model.layers.0.mlp.up_proj.weight", "lm_head.weight"):
        assert torch.equal(base[key], tuned[key]), key              # frozen


def test_pose_trains_short_windows_for_the_target_length(tiny_train_model_dir, text_file, tmp_path):
    out = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "pose", pose_window=32))
    summary = json.loads((out / "training.json").read_text())
    assert summary["seq_len"] == 32 and summary["target_length"] == 128
    rows = read_loss_csv(out / "loss.csv")
    assert all(r["tokens"] == 32 * r["step"] for r in rows) and all(r["loss"] > 0 for r in rows)


def test_pose_window_longer_than_target(tiny_train_model_dir, text_file, tmp_path):
    with pytest.raises(ValueError, match="`pose_window` 256 is longer than the target length 128"):
        finetune(_config(tiny_train_model_dir, text_file, tmp_path / "x", pose_window=256))


class _Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_same_weights(tiny_train_model_dir, text_file, tmp_path):
    kw = dict(steps=5, save_every=2, grad_accum=2, batch_size=2, lora_rank=None)
    straight = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "straight", **kw))

    def crash_after_three(step):   # step 3 ran but its checkpoint was not written: it must run again
        if step == 3:
            raise _Crash

    broken = tmp_path / "broken"
    with pytest.raises(_Crash):
        finetune(_config(tiny_train_model_dir, text_file, broken, **kw), on_step=crash_after_three)
    assert not (broken / "training.json").exists()
    resumed = finetune(_config(tiny_train_model_dir, text_file, broken, resume=True, **kw))
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def curve(run):
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in read_loss_csv(run / "loss.csv")]

    assert curve(resumed) == curve(straight) and len(curve(resumed)) == 5   # the re-run step 3 is logged once
    assert json.loads((resumed / "training.json").read_text())["resumed_from_step"] == 2


def test_non_empty_output_needs_resume_or_overwrite(tiny_train_model_dir, text_file, tmp_path):
    out = tmp_path / "run"
    finetune(_config(tiny_train_model_dir, text_file, out, steps=1))
    with pytest.raises(ValueError, match="is not empty; pass `resume` .* or `overwrite`"):
        finetune(_config(tiny_train_model_dir, text_file, out, steps=1))
    finetune(_config(tiny_train_model_dir, text_file, out, steps=2, overwrite=True))
    assert len(read_loss_csv(out / "loss.csv")) == 2


def test_overwrite_refuses_a_foreign_directory(tiny_train_model_dir, text_file, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to delete"):
        finetune(_config(tiny_train_model_dir, text_file, tmp_path, overwrite=True))
    assert (tmp_path / "notes.txt").exists()


def test_resume_without_checkpoint(tiny_train_model_dir, text_file, tmp_path):
    with pytest.raises(ValueError, match="`resume`: .* has no checkpoint"):
        finetune(_config(tiny_train_model_dir, text_file, tmp_path / "none", resume=True))


def test_resume_with_another_model_is_refused(tiny_train_model_dir, text_file, tmp_path, make_tiny_model):
    out = tmp_path / "run"
    finetune(_config(tiny_train_model_dir, text_file, out, steps=2, save_every=1))
    other = make_tiny_model(tmp_path / "other", intermediate_size=96)
    with pytest.raises(ValueError, match="different run: config.intermediate_size differs"):
        finetune(_config(other, text_file, out, steps=3, resume=True))


def test_report_to_a_missing_tracker(tiny_train_model_dir, text_file, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match="`report_to` wandb needs the wandb package"):
        finetune(_config(tiny_train_model_dir, text_file, tmp_path / "w", report_to="wandb"))


def test_training_loss_equals_the_models_own_loss(tiny_llama):
    from ropescale.train.loop import training_loss

    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(0))
    expected = tiny_llama(ids, labels=ids).loss
    assert torch.allclose(training_loss(tiny_llama, ids, chunk_size=7), expected, atol=1e-5)


def test_training_loss_weighs_every_row_the_same(tiny_llama):
    # a row scoring 3 tokens counts as much as a row scoring all of its tokens (passkey answers beside text)
    from ropescale.train.loop import training_loss
    from ropescale.train.loss import shift_labels

    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    labels = shift_labels(ids)
    labels[1, :30] = -100
    labels[1, 33:] = -100
    per_row = [tiny_llama(ids[i : i + 1], labels=torch.cat([ids[i : i + 1, :1], labels[i : i + 1, :-1]], 1)).loss
               for i in range(2)]   # transformers shifts its labels itself
    expected = (per_row[0] + per_row[1]) / 2
    assert torch.allclose(training_loss(tiny_llama, ids, chunk_size=7, labels=labels), expected, atol=1e-5)


@pytest.mark.parametrize("lora_rank", [None, 4])
def test_weights_gathered_from_shards_save_the_same_model(tiny_train_model_dir, text_file, tmp_path, monkeypatch,
                                                          lora_rank):
    # FSDP / DeepSpeed ZeRO: the main process rebuilds the model from accelerate's gathered state dict. That dict
    # has the keys of the unsharded model, so taking it from one process exercises the same rebuild on CPU.
    import ropescale.train.loop as loop

    plain = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "plain", lora_rank=lora_rank))
    rebuilds, real_rebuilt = [], loop._rebuilt
    monkeypatch.setattr(loop, "_rebuilt", lambda *a: rebuilds.append(1) or real_rebuilt(*a))
    monkeypatch.setattr(loop, "_gathered_weights", lambda accelerator, model: accelerator.get_state_dict(model))
    rebuilt = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "rebuilt", lora_rank=lora_rank))
    assert rebuilds == [1]
    a, b = _weights(plain), _weights(rebuilt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.norm.weight"], torch.ones_like(a["model.norm.weight"]))   # it trained


def test_a_bf16_base_is_saved_in_bf16_with_ties_kept(make_tiny_model, text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    base = make_tiny_model(tmp_path / "base", tie_word_embeddings=True)
    AutoModelForCausalLM.from_pretrained(base).to(torch.bfloat16).save_pretrained(base)
    out = finetune(_config(base, text_file, tmp_path / "run", steps=1))
    weights = _weights(out)
    assert "lm_head.weight" not in weights and weights["model.embed_tokens.weight"].dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_passkey_share_replaces_that_fraction_of_rows(tiny_train_model_dir, text_file, tmp_path):
    from transformers import AutoTokenizer

    from ropescale.train.loop import training_rows

    tokenizer = AutoTokenizer.from_pretrained(tiny_train_model_dir)
    plain = training_rows(_config(tiny_train_model_dir, text_file, tmp_path / "a"), tokenizer, 128, 8)
    mixed = training_rows(_config(tiny_train_model_dir, text_file, tmp_path / "b", passkey_share=0.25),
                          tokenizer, 128, 8)
    assert plain.scored is None and len(plain.ids) > 8   # whole documents packed: more rows than asked for
    assert torch.equal(mixed.ids[:6], plain.ids[:6]) and len(mixed.ids) == 8   # 6 text rows, then 2 passkey rows
    for row in mixed.ids[6:].tolist():
        assert row[-1] == tokenizer.eos_token_id and "pass key" in tokenizer.decode(row)
    # text rows score every token, passkey rows their answers and the EOS after each
    input_ids, labels = mixed.batch([5, 6])
    assert (labels[0, :-1] == input_ids[0, 1:]).all()
    scored = labels[1] != -100
    answers = tokenizer.decode(labels[1][scored])
    assert 0 < int(scored.sum()) < 40 and answers.endswith("</s>")
    assert answers.replace("</s>", "").replace(" ", "").isdigit()
    out = finetune(_config(tiny_train_model_dir, text_file, tmp_path / "run", passkey_share=0.25))
    summary = json.loads((out / "training.json").read_text())
    assert summary["settings"]["passkey_share"] == 0.25 and summary["final_loss"] > 0


def test_passkey_mix_sets_the_formats_of_the_synthetic_rows(tiny_train_model_dir, text_file, tmp_path):
    from transformers import AutoTokenizer

    from ropescale.data.synthetic import PRETRAINING_MIX, TRAINING_MIX, parse_mix
    from ropescale.train.loop import training_rows

    tokenizer = AutoTokenizer.from_pretrained(tiny_train_model_dir)
    config = _config(tiny_train_model_dir, text_file, tmp_path / "a", passkey_share=0.5, passkey_mix="vt=1")
    rows = training_rows(config, tokenizer, 256, 8)
    texts = [tokenizer.decode(row) for row in rows.ids[4:].tolist()]
    # variable tracking, with passkey only where a document is too short for a chain (training_document's fallback)
    assert sum("VAR" in t for t in texts) >= 2 and not any("magic number" in t for t in texts)
    default = training_rows(_config(tiny_train_model_dir, text_file, tmp_path / "b", passkey_share=0.5),
                            tokenizer, 256, 8)
    assert any("magic number" in tokenizer.decode(row) for row in default.ids[4:].tolist())
    assert parse_mix(" passkey = 0.2 , vt=0.1") == {"passkey": 0.2, "vt": 0.1}
    assert parse_mix("pretraining") == PRETRAINING_MIX and parse_mix("training") == TRAINING_MIX
    pretraining = training_rows(_config(tiny_train_model_dir, text_file, tmp_path / "p", passkey_share=0.5,
                                         passkey_mix="pretraining"), tokenizer, 256, 8)
    assert not torch.equal(pretraining.ids, default.ids)   # the preset reaches the rows
    for bad, words in [("pass=1", "unknown document format 'pass'"), ("vt", "must be a number >= 0"),
                       ("vt=-1", "must be a number >= 0"), ("vt=0", "must not all be 0")]:
        with pytest.raises(ValueError, match=words):
            _config(tiny_train_model_dir, text_file, tmp_path / "c", passkey_share=0.5, passkey_mix=bad)
    with pytest.raises(ValueError, match="unset when passkey_share is 0"):
        _config(tiny_train_model_dir, text_file, tmp_path / "c", passkey_mix="vt=1")
