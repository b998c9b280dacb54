"""The shipped embedded model does what its card says, measured through the public evaluation API.

Thresholds sit below the card's measured values (scripts/measure_embedded.py, 200 passkey trials and every
held-out row) because these checks use fewer trials and rows; a retrained checkpoint that no longer retrieves
or predicts Shakespeare fails them. Seeded: each check always gives the same number.
"""

import pytest

from ropescale.evaluate import PasskeyTask, PerplexityTask, evaluate


@pytest.fixture(scope="module")
def passkey_rows(tmp_path_factory):
    task = PasskeyTask(lengths=[256], depths=[0.0, 0.25, 0.5, 0.75, 1.0], trials=8, seed=11)
    return evaluate(task, None, output=tmp_path_factory.mktemp("q") / "r.jsonl", progress=False)


def test_it_retrieves_passkeys_at_its_own_context_length(passkey_rows):
    accuracy = [r.value for r in passkey_rows if r.metric == "accuracy"]
    assert len(accuracy) == 5   # one cell per depth, 8 keys each: 40 trials
    assert sum(accuracy) / len(accuracy) >= 0.9, accuracy


def test_it_predicts_held_out_shakespeare(tmp_path):
    task = PerplexityTask(lengths=[256], data="embedded", split="eval", max_windows=32)
    rows = evaluate(task, None, output=tmp_path / "r.jsonl", progress=False)
    bpb = next(r.value for r in rows if r.metric == "bits_per_byte")
    assert bpb <= 2.1


def test_it_retrieves_rulers_single_needle_and_with_prose_it_never_saw(tmp_path):
    from ropescale.data.fillers import essay_sentences
    from ropescale.evaluate import RulerTask

    rows = evaluate(RulerTask(lengths=[256], tasks=["niah_single_1"], samples=10), None,
                    output=tmp_path / "r.jsonl", progress=False)
    assert next(r.value for r in rows if r.metric == "niah_single_1") >= 0.9
    essays = PasskeyTask(lengths=[256], depths=[0.0, 0.5, 1.0], trials=4, seed=5, filler=" ".join(essay_sentences()),
                         filler_name="essays")
    accuracy = [r.value for r in evaluate(essays, None, output=tmp_path / "p.jsonl", progress=False)
                if r.metric == "accuracy"]
    assert sum(accuracy) / len(accuracy) >= 0.9, accuracy
