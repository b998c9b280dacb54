"""Needle: scoring, insertion at sentence boundaries, prompt lengths, rows on a random model."""

import pytest

from ropescale.evaluate import NeedleTask, evaluate
from ropescale.evaluate.driver import Subject
from ropescale.evaluate.needle import exact_match, insertion_point, prediction_span, token_f1

HAYSTACK = " ".join(f"Sentence number {i} tells of the king and his horse." for i in range(400))


def test_scoring_normalises_and_matches_the_answer_span():
    assert exact_match(prediction_span(" a spoonful of honey. The duke"), "a spoonful of honey")
    assert exact_match("A Spoonful of Honey!", "a spoonful of honey")
    assert not exact_match("a spoonful of sugar", "a spoonful of honey")
    assert not exact_match("spoonful of honeycomb", "a spoonful of honey")  # whole words only
    assert token_f1("a spoonful of honey", "a spoonful of honey") == 1.0
    assert token_f1("spoonful of sugar", "a spoonful of honey") == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert token_f1("nothing", "a spoonful of honey") == 0.0
    assert prediction_span(" honey\nand more") == "honey"


def test_insertion_snaps_back_to_a_sentence_start():
    assert insertion_point([0, 10, 20, 30], 40, 0.0) == 0
    assert insertion_point([0, 10, 20, 30], 40, 0.6) == 20  # target 24 -> the start at or before it
    assert insertion_point([0, 10, 20, 30], 40, 1.0) == 30
    assert insertion_point([0, 10, 20, 40], 40, 1.0) == 40


def prepared(tokenizer, **kw):
    task = NeedleTask(lengths=[200], depths=[0.0, 0.5, 1.0], trials=3, haystack=HAYSTACK, haystack_name="kings", **kw)
    task.prepare(None, tokenizer, Subject("m", None, None, 64, 16))
    return task


def test_prompts_fill_the_length_and_put_the_needle_after_a_sentence_end(lm_tokenizer):
    task = prepared(lm_tokenizer)
    needle = lm_tokenizer.encode(" " + task.needle, add_special_tokens=False)
    for depth in (0.0, 0.3, 0.5, 1.0):
        ids, realised = task.prompt(200, depth, offset=task._offsets(200, task._hay_budget(200))[0])
        assert len(ids) + task._n_new == 200 and ids[0] == lm_tokenizer.bos_token_id
        at = next(i for i in range(len(ids)) if ids[i : i + len(needle)] == needle)
        before = lm_tokenizer.decode(ids[1:at]).rstrip()
        assert before == "" or before.endswith(".")  # a sentence boundary (or the very start)
        assert realised <= depth + 1e-9 and (depth == 0.0) == (at == 1)
    assert lm_tokenizer.decode(ids).rstrip().endswith("The secret ingredient of the duke's cake is")


def test_bad_needle_settings_and_short_inputs_are_clear_errors(lm_tokenizer):
    with pytest.raises(ValueError, match="`answer`"):
        NeedleTask(answer="vinegar")
    task = prepared(lm_tokenizer)
    with pytest.raises(ValueError, match="`lengths` 20 is too short"):
        task._hay_budget(20)
    with pytest.raises(ValueError, match="`lengths` 100000.*haystack"):
        task._offsets(100000, task._hay_budget(100000))


def test_needle_on_a_random_model_writes_accuracy_and_f1(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    task = NeedleTask(lengths=[128], depths=[0.0, 1.0], trials=2, haystack=HAYSTACK, haystack_name="kings")
    rows = evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", progress=False)
    assert sorted((r.depth, r.metric) for r in rows) == [(0.0, "accuracy"), (0.0, "f1"), (1.0, "accuracy"), (1.0, "f1")]
    assert all(r.task == "needle" and r.n == 2 and 0 <= r.value <= 1 for r in rows)
