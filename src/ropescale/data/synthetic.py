"""Synthetic retrieval documents for training: passkey and RULER's needle and tracing formats, with training
fillers and training keys only (`fillers.TRAIN_FAMILIES`, `fillers.key_split`).

The embedded model is pretrained on them and fine-tuning mixes them in (`passkey_share`), so a model keeps the
retrieval it will be evaluated on while the evaluation's fillers and keys stay unseen. A document is a whole
prompt + reference answer + EOS; its answer tokens are the ones worth scoring.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from ropescale.data.fillers import TRAIN_FAMILIES, draw_filler, draw_key
from ropescale.data.passkey import passkey_prompt, random_key
from ropescale.data.ruler import Haystacks, niah_sample, vt_sample, TASKS

# Share of each format among training documents. Passkey keeps the Landmark template the passkey evaluation
# uses; the RULER formats are those that fit in L0 = 256 tokens (cwe, fwe and the 4-answer needles need more).
TRAINING_MIX = {
    "passkey": 0.3,
    "niah_single_1": 0.15,
    "niah_single_2": 0.1,
    "niah_single_3": 0.1,
    "niah_multikey_1": 0.1,
    "niah_multikey_2": 0.1,
    "niah_multivalue": 0.05,
    "vt": 0.1,
}
NOISE_FAMILIES = ("noise-sentences", "random-words", "shakespeare-lines")  # short fillers that repeat


class Document(NamedTuple):
    ids: list[int]  # prompt + answer + EOS
    is_answer: list[bool]  # the answer tokens


def training_haystacks(rng: random.Random) -> Haystacks:
    """Haystacks of training text: a repeated noise-like filler and shuffled sentences of the training plays."""
    return Haystacks(noise=draw_filler(rng.choice(NOISE_FAMILIES), rng),
                     essay=draw_filler("shuffled-prose", rng), keys="train")


def passkey_document(tokenizer, rng: random.Random, total: int, depth: float) -> Document:
    """A Landmark passkey document of `total` tokens with a training filler and a training key."""
    key = draw_key(rng, random_key, "train")
    filler = " ".join(draw_filler(rng.choice(TRAIN_FAMILIES), rng))
    n_answer = len(passkey_prompt(tokenizer, total, 0.5, key, filler).answer_ids) + 1
    p = passkey_prompt(tokenizer, total - n_answer, depth, key, filler)
    return _document(tokenizer, p.prompt_ids, p.answer_ids)


def training_document(tokenizer, rng: random.Random, total: int, depth: float,
                      mix: dict[str, float] = TRAINING_MIX) -> Document:
    """One document of exactly `total` tokens in a format drawn from `mix`; a format that needs more tokens than
    `total` falls back to passkey (which fits in ~110 tokens)."""
    fmt = rng.choices(list(mix), weights=list(mix.values()))[0]
    if fmt != "passkey":
        task = TASKS[fmt]
        make = vt_sample if task.kind == "vt" else niah_sample
        try:
            s = make(tokenizer, task, total - 1, depth, rng, training_haystacks(rng))
            return _document(tokenizer, s.prompt_ids, s.answer_ids)
        except ValueError:
            pass
    return passkey_document(tokenizer, rng, total, depth)


def _document(tokenizer, prompt: list[int], answer: list[int]) -> Document:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, which ends every training document")
    return Document(prompt + answer + [tokenizer.eos_token_id],
                    [False] * len(prompt) + [True] * len(answer) + [False])
