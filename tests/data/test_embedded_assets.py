"""The embedded tokenizer and model load from the package assets with plain transformers, offline."""

import pytest
import torch

from ropescale import embedded_model_path


def test_tokenizer_round_trips_and_splits_digits(embedded_tokenizer):
    tok = embedded_tokenizer
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    text = "O, that this too too solid flesh would melt,\nThaw, and resolve itself into a dew! 1603 — Ω"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # BOS is prepended, EOS is not
    assert tok.decode(ids, skip_special_tokens=True) == text  # byte-level: any text round-trips
    assert tok.convert_ids_to_tokens(tok.encode("year 90210", add_special_tokens=False))[-5:] == list("90210")


MODEL_READY = (embedded_model_path() / "config.json").exists()


@pytest.mark.skipif(not MODEL_READY, reason="the embedded checkpoint is not trained yet")
def test_model_loads_offline_with_auto_classes(embedded_tokenizer, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(embedded_model_path())
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.max_position_embeddings == 256
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    assert cfg.rope_parameters["rope_theta"] == 10000.0
    assert 3e6 < sum(p.numel() for p in model.parameters()) < 15e6
    ids = embedded_tokenizer("To be, or not to be", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(embedded_tokenizer)) and torch.isfinite(logits).all()
