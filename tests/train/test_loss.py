"""Chunked loss equals the model's own full-logits loss; gradients too."""

import pytest
import torch

from ropescale.train.loss import causal_lm_loss, shift_labels


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_chunked_loss_equals_full_logits_loss(tiny_llama, chunk_size):
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    full = tiny_llama(ids, labels=ids).loss
    total, n = causal_lm_loss(tiny_llama, ids, chunk_size=chunk_size)
    assert n == 2 * 39
    assert abs(total.item() / n - full.item()) < 1e-5


def test_chunked_gradients_equal_full_gradients(tiny_llama):
    ids = torch.randint(0, 97, (1, 33), generator=torch.Generator().manual_seed(2))
    tiny_llama(ids, labels=ids).loss.backward()
    full = [p.grad.clone() for p in tiny_llama.parameters()]
    tiny_llama.zero_grad()
    total, n = causal_lm_loss(tiny_llama, ids, chunk_size=5)
    (total / n).backward()
    for a, p in zip(full, tiny_llama.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-4)


def test_softcapped_model_matches():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=3.0)
    model = Gemma2ForCausalLM(config).eval()
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(3))
    total, n = causal_lm_loss(model, ids, chunk_size=6)
    assert abs(total.item() / n - model(ids, labels=ids).loss.item()) < 1e-5


def test_shift_labels_ignores_padding():
    ids = torch.tensor([[5, 6, 7, 0]])
    labels = shift_labels(ids, attention_mask=torch.tensor([[1, 1, 1, 0]]))
    assert labels.tolist() == [[6, 7, -100, -100]]


def test_auto_chunk_size_bounds_logits():
    from ropescale.train.loss import LOGITS_BUDGET_ELEMENTS, auto_chunk_size

    assert auto_chunk_size(1, 128256) * 128256 <= LOGITS_BUDGET_ELEMENTS
    assert auto_chunk_size(4, 32000) == LOGITS_BUDGET_ELEMENTS // (4 * 32000)
    assert auto_chunk_size(1, 10**9) == 16  # never below a useful minimum


def test_default_chunking_equals_full_loss(tiny_llama):
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(5))
    total, n = causal_lm_loss(tiny_llama, ids)
    assert abs(total.item() / n - tiny_llama(ids, labels=ids).loss.item()) < 1e-5
