"""Passkey prompts: exact token length, key line at the requested depth, the answer as the model must emit it."""

import pytest

from ropescale.data import passkey_prompt, passkey_trials
from ropescale.data.passkey import FILLER, QUESTION, TASK


@pytest.mark.parametrize("length", [120, 256, 2048])
@pytest.mark.parametrize("depth", [0.0, 0.37, 1.0])
def test_prompt_has_exactly_length_tokens_and_the_key_at_depth(embedded_tokenizer, length, depth):
    p = passkey_prompt(embedded_tokenizer, length, depth, "40213")
    assert len(p.prompt_ids) == length
    assert p.prompt_ids[0] == embedded_tokenizer.bos_token_id  # what tokenizer(text) starts with
    assert abs(p.depth - depth) < 0.02  # the filler is whole tokens: 25 of them at length 120
    text = embedded_tokenizer.decode(p.prompt_ids, skip_special_tokens=True)
    assert text.startswith(TASK + "\n") and text.endswith("\n" + QUESTION)
    key_text = embedded_tokenizer.decode(p.prompt_ids[p.key_start :])
    assert key_text.startswith("\nThe pass key is 40213. Remember it. 40213 is the pass key.\n")


def test_answer_is_the_key_one_token_per_digit(embedded_tokenizer):
    p = passkey_prompt(embedded_tokenizer, 256, 0.5, "12345")
    assert embedded_tokenizer.decode(p.answer_ids) == " 12345"
    assert len(p.answer_ids) == 6  # the space, then one token per digit
    assert embedded_tokenizer.decode(p.prompt_ids + p.answer_ids).endswith("The pass key is 12345")


def test_depth_splits_the_filler(embedded_tokenizer):
    shallow = passkey_prompt(embedded_tokenizer, 512, 0.1, "11111")
    deep = passkey_prompt(embedded_tokenizer, 512, 0.9, "11111")
    assert shallow.key_start < deep.key_start
    assert FILLER[:40] in embedded_tokenizer.decode(deep.prompt_ids[: deep.key_start])


def test_custom_filler(embedded_tokenizer):
    p = passkey_prompt(embedded_tokenizer, 300, 0.5, "22222", filler="Now is the winter of our discontent.")
    assert "winter of our discontent" in embedded_tokenizer.decode(p.prompt_ids)
    assert "grass is green" not in embedded_tokenizer.decode(p.prompt_ids)


def test_too_short_length_and_bad_arguments(embedded_tokenizer):
    with pytest.raises(ValueError, match="length 40 is too short .* at least"):
        passkey_prompt(embedded_tokenizer, 40, 0.5, "12345")
    with pytest.raises(ValueError, match="depth"):
        passkey_prompt(embedded_tokenizer, 256, 1.5, "12345")
    with pytest.raises(ValueError, match="digits"):
        passkey_prompt(embedded_tokenizer, 256, 0.5, "12a45")


def test_trials_are_fixed_by_the_seed_with_spread_depths(embedded_tokenizer):
    a = passkey_trials(embedded_tokenizer, 250, 5, seed=7)
    assert a == passkey_trials(embedded_tokenizer, 250, 5, seed=7)
    assert [t.depth for t in a] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=0.01)
    assert all(len(t.key) == 5 and len(t.prompt_ids) == 250 for t in a)
