"""Passkey prompts: exact token length, key line at the requested depth, the answer as the model must emit it."""

import pytest
import torch

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


PASSKEY_ONLY = {"passkey": 1.0}


def _documents(tokenizer, row):
    """Split a passkey training row at EOS into decoded documents."""
    docs, current = [], []
    for t in row.tolist():
        if t == tokenizer.eos_token_id:
            docs.append(current)
            current = []
        else:
            current.append(t)
    assert current == []  # a row ends with a whole document
    return docs


def test_passkey_only_task_rows_are_whole_documents_with_training_fillers(embedded_tokenizer):
    from ropescale.data import embedded_corpus
    from ropescale.data.synthetic import task_rows

    texts = [d.text for d in embedded_corpus("train")[:3]]
    rows, answers = task_rows(embedded_tokenizer, 6, 1024, texts, seed=3, min_len=128, mix=PASSKEY_ONLY)
    assert rows.shape == answers.shape == (6, 1024) and answers.dtype == torch.bool
    again = task_rows(embedded_tokenizer, 6, 1024, texts, seed=3, min_len=128, mix=PASSKEY_ONLY)
    assert torch.equal(rows, again[0]) and torch.equal(answers, again[1])
    assert not torch.equal(rows, task_rows(embedded_tokenizer, 6, 1024, texts, seed=4, min_len=128, mix=PASSKEY_ONLY)[0])
    n_docs = 0
    for row, is_answer in zip(rows, answers):
        keys = []
        for doc in _documents(embedded_tokenizer, row):
            n_docs += 1
            assert len(doc) + 1 >= 128 and doc[0] == embedded_tokenizer.bos_token_id
            text = embedded_tokenizer.decode(doc, skip_special_tokens=True)
            assert text.startswith(TASK + "\n") and "grass is green" not in text   # never the evaluation's filler
            key = text.split("The pass key is ")[1][:5]
            assert key.isdigit() and text.endswith(f"\n{QUESTION} {key}")
            keys.append(key)
        # the mask marks each document's answer (the key after the question) and the EOS that ends it, nothing else
        assert embedded_tokenizer.decode(row[is_answer]).split("</s>")[:-1] == [f" {k}" for k in keys]
    assert n_docs > 6   # rows hold several documents of different lengths


def test_passkey_only_task_rows_put_some_keys_at_either_end(embedded_tokenizer):
    from ropescale.data import embedded_corpus
    from ropescale.data.synthetic import task_rows

    texts = [d.text for d in embedded_corpus("train")[:3]]
    rows, _ = task_rows(embedded_tokenizer, 40, 256, texts, seed=0, min_len=100, mix=PASSKEY_ONLY)
    docs = [embedded_tokenizer.decode(doc, skip_special_tokens=True)
            for row in rows for doc in _documents(embedded_tokenizer, row)]
    first = sum(d.startswith(TASK + "\n\nThe pass key is") for d in docs)
    last = sum(f"is the pass key.\n\n{QUESTION}" in d for d in docs)
    # about END_DEPTH_SHARE (10 %) of the documents at each end; uniform depths alone give 1 and 3 of these 63
    assert 0.06 * len(docs) <= first <= 0.2 * len(docs) and 0.06 * len(docs) <= last <= 0.2 * len(docs)


def test_passkey_only_task_rows_refuse_rows_too_short_for_a_document(embedded_tokenizer):
    from ropescale.data.synthetic import task_rows

    with pytest.raises(ValueError, match="training documents need at least"):
        task_rows(embedded_tokenizer, 1, 40, ["some words here"], seed=0, min_len=8, mix=PASSKEY_ONLY)
