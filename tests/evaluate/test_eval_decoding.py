"""Cached greedy decoding and teacher-forced answer NLL equal their full-forward definitions."""

import torch
import torch.nn.functional as F

from ropescale.evaluate.decoding import answer_nll, greedy, prefill


def test_cached_greedy_equals_argmax_of_full_forwards(tiny_llama):
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cached = greedy(tiny_llama, prefill(tiny_llama, ids), 6)
        seq = ids
        for _ in range(6):  # no cache: rerun the whole sequence for every token
            seq = torch.cat([seq, tiny_llama(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq[:, 20:])


def test_answer_nll_equals_full_forward_and_leaves_the_cache_for_greedy(tiny_llama):
    ids = torch.randint(0, 97, (2, 15), generator=torch.Generator().manual_seed(2))
    answer = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        state = prefill(tiny_llama, ids)
        nll = answer_nll(tiny_llama, state, answer)
        decoded = greedy(tiny_llama, state, 3)
        logits = tiny_llama(torch.cat([ids, answer], 1)).logits[:, 14:-1]  # predictions of the answer tokens
        reference = F.cross_entropy(logits.transpose(1, 2), answer, reduction="none")
        fresh = greedy(tiny_llama, prefill(tiny_llama, ids), 3)
    assert torch.allclose(nll, reference, atol=1e-5)
    assert torch.equal(decoded, fresh)
