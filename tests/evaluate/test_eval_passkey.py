"""Passkey: rows and schema on a random model; the scorer on an oracle that reads the key; custom filler."""

import math

import pytest
import torch

from ropescale.evaluate import PasskeyTask, evaluate
from ropescale.evaluate.passkey import (
    UNIFORM_BITS_PER_DIGIT, cell_keys, cell_prompts, depth_grid, is_correct, score_prompts)


class Output(dict):
    __getattr__ = dict.__getitem__


class OracleLM(torch.nn.Module):
    """A fake causal LM that puts all its mass on the right answer token: it knows each prompt's answer.

    `wrong_ids` makes it answer those token ids instead (e.g. the key with its last digit changed, a near miss).
    After the answer it says EOS (id 2, the embedded tokenizer's), which ends generation."""

    def __init__(self, answers: dict[tuple, list[int]], vocab: int, wrong_ids: dict[tuple, list[int]] | None = None):
        super().__init__()
        self.answers, self.vocab, self.wrong = answers, vocab, wrong_ids
        self.config = tiny_lm_config_for_oracle(vocab)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the driver a device

    def forward(self, input_ids, cache=None, use_cache=True, logits_to_keep=0):
        # the cache remembers each row's answer and how many answer tokens have been predicted so far; the prompt
        # predicts answer token 0, each later input token the next one
        if cache is None:
            table = self.wrong or self.answers
            cache, steps = {"answers": [table[tuple(r)] + [2] for r in input_ids.tolist()], "done": 0}, 1
        else:
            steps = input_ids.shape[1]
        logits = torch.full((input_ids.shape[0], steps, self.vocab), -30.0)
        for b, answer in enumerate(cache["answers"]):
            for s in range(steps):
                logits[b, s, answer[min(cache["done"] + s, len(answer) - 1)]] = 30.0
        cache = {**cache, "done": cache["done"] + steps}
        return Output(logits=logits if logits_to_keep == 0 else logits[:, -logits_to_keep:], cache=cache)


def tiny_lm_config_for_oracle(vocab: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)


def test_exact_match_is_on_the_first_digits():
    assert is_correct(" 12345", "12345") and is_correct(" 12345.", "12345")
    assert not is_correct(" 1234", "12345") and not is_correct(" 123456", "12345") and not is_correct(" x", "1")


def test_oracle_scores_all_correct_and_near_zero_bits(lm_tokenizer):
    prompts = cell_prompts(lm_tokenizer, 160, 0.5, cell_keys(0, 160, 0.5, 4, 5), None)
    oracle = OracleLM({tuple(p.prompt_ids): p.answer_ids for p in prompts}, len(lm_tokenizer))
    scored = score_prompts(oracle, lm_tokenizer, prompts)
    assert [t.correct for t in scored] == [True] * 4 and max(t.bits_per_digit for t in scored) < 1e-6


def test_near_miss_is_wrong_and_pays_bits_on_the_wrong_digit(lm_tokenizer):
    prompts = cell_prompts(lm_tokenizer, 160, 0.0, cell_keys(0, 160, 0.0, 3, 5), None)
    wrong = {}
    for p in prompts:
        other = p.key[:-1] + str((int(p.key[-1]) + 1) % 10)
        wrong[tuple(p.prompt_ids)] = lm_tokenizer.encode(" " + other, add_special_tokens=False)
    oracle = OracleLM({}, len(lm_tokenizer), wrong_ids=wrong)
    scored = score_prompts(oracle, lm_tokenizer, prompts)
    assert [t.correct for t in scored] == [False] * 3
    # one digit at a 60-nat margin
    assert all(t.bits_per_digit == pytest.approx(60 / math.log(2) / 5, rel=1e-3) for t in scored)


def test_prompt_plus_answer_fill_the_cell_length_and_keys_are_seeded(lm_tokenizer):
    keys = cell_keys(7, 200, 0.25, 5, 5)
    assert keys == cell_keys(7, 200, 0.25, 5, 5) and keys != cell_keys(7, 200, 0.5, 5, 5)
    assert len(set(keys)) > 1 and all(len(k) == 5 for k in keys)
    for p in cell_prompts(lm_tokenizer, 200, 0.25, keys, None):
        assert len(p.prompt_ids) + len(p.answer_ids) == 200


def test_passkey_on_a_random_model_writes_schema_rows(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    task = PasskeyTask(lengths=[128, 192], depths=depth_grid(3), trials=2, batch_size=2)
    rows = evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", label="tiny", progress=False)
    assert len(rows) == 2 * 3 * 2
    assert {(r.length, r.depth) for r in rows} == {(n, d) for n in (128, 192) for d in (0.0, 0.5, 1.0)}
    for r in rows:
        assert r.task == "passkey" and r.n == 2 and r.metric in ("accuracy", "key_bits_per_digit")
        assert 0.0 <= r.value <= 1.0 if r.metric == "accuracy" else r.value > 0
    bits = [r for r in rows if r.metric == "key_bits_per_digit"]
    assert bits[0].extra["uniform_bits_per_digit"] == pytest.approx(UNIFORM_BITS_PER_DIGIT)


def test_custom_filler_replaces_the_landmark_sentences(lm_tokenizer, tiny_lm, tmp_path):
    filler = "Bees hum over the old stone wall."
    prompts = cell_prompts(lm_tokenizer, 160, 0.5, ["12345"], filler)
    text = lm_tokenizer.decode(prompts[0].prompt_ids)
    assert "Bees hum over the old stone wall" in text and "The grass is green" not in text
    model, tokenizer = tiny_lm
    task = PasskeyTask(lengths=[128], depths=[0.5], trials=1, filler=filler, filler_name="bees.txt")
    rows = evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", progress=False)
    assert rows[0].settings["filler"] == "bees.txt"


def test_too_short_length_names_the_flag(lm_tokenizer):
    with pytest.raises(ValueError, match="`lengths` 40"):
        cell_prompts(lm_tokenizer, 40, 0.5, ["12345"], None)


@pytest.mark.parametrize("said, correct", [(" The pass key is {key}", True), (" {wrong}", False)])
def test_the_answer_is_read_from_the_whole_output_and_each_output_is_logged(lm_tokenizer, tmp_path, said, correct):
    from ropescale.evaluate.samples import SamplesFile, samples_path

    task = PasskeyTask(lengths=[160], depths=[0.5], trials=2)
    keys = cell_keys(0, 160, 0.5, 2, 5)
    prompts = cell_prompts(lm_tokenizer, 160, 0.5, keys, None)
    script = {tuple(p.prompt_ids): lm_tokenizer.encode(said.format(key=p.key, wrong="12845"),
                                                       add_special_tokens=False) for p in prompts}
    oracle = OracleLM(script, len(lm_tokenizer))
    out = tmp_path / "r.jsonl"
    rows = evaluate(task, oracle, tokenizer=lm_tokenizer, output=out, samples=samples_path(out), progress=False)
    assert [r.value for r in rows if r.metric == "accuracy"] == [1.0 if correct else 0.0]
    logged = SamplesFile(samples_path(out)).read()
    assert samples_path(out).name == "r.samples.jsonl" and len(logged) == 2
    for record, key in zip(sorted(logged, key=lambda r: r["index"]), keys):
        assert record["output"] == said.format(key=key, wrong="12845")
        assert record["expected"] == key and record["correct"] is correct
        assert record["prompt_tokens"] == 160 - 6 and "prompt" not in record  # no prompt text unless asked
        assert record["task"] == "passkey" and record["metric"] == "accuracy" and record["length"] == 160


def test_prompts_are_logged_only_when_asked(lm_tokenizer, tmp_path):
    from ropescale.evaluate.samples import SamplesFile

    prompts = cell_prompts(lm_tokenizer, 160, 0.0, cell_keys(0, 160, 0.0, 1, 5), None)
    oracle = OracleLM({tuple(p.prompt_ids): p.answer_ids for p in prompts}, len(lm_tokenizer))
    evaluate(PasskeyTask(lengths=[160], depths=[0.0], trials=1), oracle, tokenizer=lm_tokenizer,
             output=tmp_path / "r.jsonl", samples=tmp_path / "s.jsonl", log_prompts=True, progress=False)
    (record,) = SamplesFile(tmp_path / "s.jsonl").read()
    assert record["prompt"].startswith("<s>There is an important info hidden") and record["correct"] is True
