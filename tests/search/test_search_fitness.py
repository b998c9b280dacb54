"""The search's fitness reads training text and training keys only, and scores a candidate as the model would run."""

import math
import re

import pytest
import torch

from ropescale.data import fillers, synthetic
from ropescale.data.fillers import TRAIN_FAMILIES, key_split
from ropescale.rope import RopeSpec
from ropescale.search.fitness import fitness_data, needle_data, perplexity_data, score
from ropescale.search.space import Space, seeds, to_spec
from ropescale.train.loss import IGNORE_INDEX


def test_needle_documents_hold_training_fillers_and_training_keys_only(lm_tokenizer, monkeypatch):
    families = []
    draw = fillers.draw_filler

    def recording(family, rng, pool=None):
        families.append(family)
        return draw(family, rng, pool)

    monkeypatch.setattr(synthetic, "draw_filler", recording)
    data = needle_data(lm_tokenizer, 400, 12, seed=3)
    assert data.input_ids.shape == data.labels.shape == (12, 400)
    assert families and set(families) <= set(TRAIN_FAMILIES)
    keys = []
    for ids, labels in zip(data.input_ids, data.labels):
        text = lm_tokenizer.decode(ids)
        keys += re.findall(r"The pass key is (\d+)\. Remember it", text)
        assert (labels != IGNORE_INDEX).sum() >= 2  # the answer and the EOS after it
    assert keys and all(key_split(k) == "train" for k in keys)


def test_needle_scores_only_answer_tokens(lm_tokenizer):
    data = needle_data(lm_tokenizer, 300, 4, seed=0)
    for ids, labels in zip(data.input_ids, data.labels):
        scored = (labels != IGNORE_INDEX).nonzero().flatten()
        assert int(labels[scored[-1]]) == lm_tokenizer.eos_token_id  # the document ends with its answer and EOS
        assert torch.equal(labels[scored], ids[scored + 1])
        assert len(scored) < 30  # answers, not the haystack


def test_perplexity_windows_come_from_the_training_plays(lm_tokenizer, monkeypatch):
    import ropescale.data

    splits = []
    load = ropescale.data.load_texts
    monkeypatch.setattr(ropescale.data, "load_texts", lambda *a, **kw: splits.append(kw.get("split")) or load(*a, **kw))
    data = perplexity_data(lm_tokenizer, 512, 3)
    assert splits == ["train"]
    assert data.input_ids.shape == (3, 512)
    text = lm_tokenizer.decode(data.input_ids[1, 1:], skip_special_tokens=True)[:300]
    train = " ".join(" ".join(d.text.split()) for d in fillers.embedded_corpus("train"))
    held_out = " ".join(" ".join(d.text.split()) for d in fillers.embedded_corpus("eval"))
    assert " ".join(text.split()) in train and " ".join(text.split()) not in held_out


def test_fitness_data_names_a_bad_fitness(lm_tokenizer):
    with pytest.raises(ValueError, match="`fitness` must be one of perplexity, needle"):
        fitness_data("bleu", lm_tokenizer, 128, 2, 0)


def test_perplexity_data_says_when_the_text_is_too_short(lm_tokenizer, tmp_path):
    (tmp_path / "t.txt").write_text("a few words only. " * 20)
    with pytest.raises(ValueError, match="`samples`"):
        perplexity_data(lm_tokenizer, 64, 50, data=str(tmp_path / "t.txt"))


def test_the_pi_seed_scores_as_linear_scaling(lm_tokenizer):
    # longrope with every factor s and attention 1 rotates exactly as PI beyond L0: the same score. The embedded
    # model, because a random one barely tells ropes apart
    from ropescale import models

    model = models.load_model(None)
    base = RopeSpec(method="default", original_max_position_embeddings=256)
    pi = {c.origin: c for c in seeds(base, 64, 4.0, Space(32, 8.0))}["linear"]
    data = perplexity_data(lm_tokenizer, 512, 1)
    searched = score(model, to_spec(pi, base, 4.0), data)
    linear = score(model, RopeSpec(method="linear", factor=4.0, original_max_position_embeddings=256), data)
    assert math.isfinite(searched) and searched == pytest.approx(linear, rel=1e-6)
    yarn = score(model, RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=256), data)
    assert abs(yarn - linear) > 1e-3  # the score does see the rope
