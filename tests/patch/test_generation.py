"""KV-cache generation against greedy decoding by repeated full forwards.

Static methods: equal. Dynamic methods (`dynamic`, `dynamic-yarn`): equal while the sequence stays within L0
and at the prefill step; past L0 transformers' cached keys keep the rotation of the base in force when they
were computed (HF #25104), while a full forward re-rotates every key with the current length's base, so the
logits differ (measured on these tiny models: up to ~1e-3). This is the behaviour the README states.
"""

import pytest
import torch

import ropescale as rs
from ropescale.cli.generate import continue_ids
from ropescale.model_info import spec_for_model
from tests.conftest import tiny_model

L0, NEW = 64, 16


def _model(arch, method):
    model = tiny_model(arch)
    model.generation_config.eos_token_id = None  # always NEW tokens
    return rs.apply(model, spec_for_model(model, method, 4.0))


def _prompt(length):
    return torch.randint(3, 97, (1, length), generator=torch.Generator().manual_seed(length))


def _full_forward_greedy(model, ids, steps):
    """Greedy decoding with no cache: each step is one forward over the whole sequence so far."""
    logits = []
    with torch.no_grad():
        for _ in range(steps):
            last = model(ids).logits[:, -1]
            logits.append(last)
            ids = torch.cat([ids, last.argmax(-1, keepdim=True)], dim=1)
    return ids, torch.stack(logits, dim=1)


def _cached(model, ids, steps):
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                             use_cache=True, output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.logits, dim=1)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@pytest.mark.parametrize("prompt_len", [40, 100])  # the whole run before L0; a prompt already past L0
def test_yarn_cached_generation_equals_full_forwards(arch, prompt_len):
    ids = _prompt(prompt_len)
    seq, logits = _cached(_model(arch, "yarn"), ids, NEW)
    full_seq, full_logits = _full_forward_greedy(_model(arch, "yarn"), ids, NEW)
    assert torch.equal(seq, full_seq)
    assert (logits - full_logits).abs().max() <= 1e-5
    assert torch.equal(continue_ids(_model(arch, "yarn"), ids, NEW), seq[0, prompt_len:])  # what the CLI runs


@pytest.mark.parametrize("method", ["dynamic", "dynamic-yarn"])
def test_dynamic_cached_generation_matches_until_it_crosses_l0(method):
    ids = _prompt(56)  # step 9 is the first whose sequence (56 + 9 = 65) is longer than L0 = 64
    seq, logits = _cached(_model("llama", method), ids, NEW)
    full_seq, full_logits = _full_forward_greedy(_model("llama", method), ids, NEW)
    per_step = (logits - full_logits).abs().amax(-1)[0]
    crossing = L0 - 56 + 1  # first step whose sequence (prompt + generated) is longer than L0
    assert per_step[:crossing].max() <= 1e-5
    assert per_step[crossing:].min() > 1e-6  # stale key rotations (HF #25104): documented, not hidden
    assert torch.equal(seq[0, :56 + crossing], full_seq[0, :56 + crossing])


@pytest.mark.parametrize("method", ["dynamic", "dynamic-yarn"])
def test_dynamic_prefill_past_l0_equals_a_full_forward(method):
    ids = _prompt(100)
    _, logits = _cached(_model("llama", method), ids, 1)
    with torch.no_grad():
        full = _model("llama", method)(ids).logits[:, -1]
    assert (logits[:, 0] - full).abs().max() <= 1e-5


def test_dynamic_without_cache_equals_full_forwards():
    ids = _prompt(56)
    model = _model("llama", "dynamic-yarn")
    seq = continue_ids(model, ids, NEW, use_cache=False)
    full_seq, _ = _full_forward_greedy(_model("llama", "dynamic-yarn"), ids, NEW)
    assert torch.equal(seq, full_seq[0, 56:])


def test_sampling_is_seeded():
    ids = _prompt(20)
    first = continue_ids(_model("llama", "yarn"), ids, NEW, temperature=1.0, top_p=0.9, seed=3)
    again = continue_ids(_model("llama", "yarn"), ids, NEW, temperature=1.0, top_p=0.9, seed=3)
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="--top-p"):
        continue_ids(_model("llama", "yarn"), ids, NEW, top_p=0.0)
