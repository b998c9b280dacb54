"""The bundled corpus: loads offline, and the held-out plays share nothing with the training plays."""

import pytest

from ropescale.data import EVAL_PLAYS, Document, embedded_corpus


def test_splits_load_offline_and_are_sorted():
    train, held_out = embedded_corpus("train"), embedded_corpus("eval")
    assert len(train) == 40 and all(isinstance(d, Document) for d in train)
    assert [d.name for d in held_out] == sorted(EVAL_PLAYS)
    assert [d.name for d in train] == sorted(d.name for d in train)
    assert sum(len(d.text.encode()) for d in held_out) >= 300_000
    assert sum(len(d.text.encode()) for d in train) > 4_500_000


def test_held_out_plays_never_overlap_training():
    train, held_out = embedded_corpus("train"), embedded_corpus("eval")
    assert not {d.name for d in train} & {d.name for d in held_out}
    train_texts = {d.text for d in train}
    train_lines = {line for d in train for line in d.text.splitlines() if len(line) > 60}
    for doc in held_out:
        assert doc.text not in train_texts
        assert doc.text.startswith(("HAMLET, PRINCE OF DENMARK", "THE LIFE AND DEATH OF KING RICHARD III"))
        # long verse lines are unique to their play; a shared one would mean a play leaked into training
        long_lines = [line for line in doc.text.splitlines() if len(line) > 60]
        assert sum(line in train_lines for line in long_lines) < 0.01 * len(long_lines)


def test_documents_are_frozen():
    doc = embedded_corpus("eval")[0]
    with pytest.raises(AttributeError):
        doc.text = ""


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match="train, eval"):
        embedded_corpus("test")
