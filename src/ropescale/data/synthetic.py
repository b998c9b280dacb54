"""Synthetic retrieval documents for training: passkey and RULER's needle and tracing formats, with training
fillers and training keys only (`fillers.TRAIN_FAMILIES`, `fillers.key_split`).

The embedded model is pretrained on them and fine-tuning mixes them in (`passkey_share`), so a model keeps the
retrieval it will be evaluated on while the evaluation's fillers and keys stay unseen. A document is a whole
prompt + reference answer + EOS; its answer tokens are the ones worth scoring.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import torch

from ropescale.data.fillers import TRAIN_FAMILIES, TextPool, draw_filler, draw_key, text_pool
from ropescale.data.passkey import passkey_prompt, random_key, training_depth
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

# The shipped embedded model's pretraining mixture (`scripts/pretrain_embedded.py`), weighted to the tasks that need
# exact copying: with TRAINING_MIX a model reached RULER 0.36 on UUID values and 0.14 on a key among distractor
# needles at L0, with this one 0.98 and 0.62 (docs/ruler, section 4). `make demo` fine-tunes the embedded model on
# it (`passkey_mix: pretraining`): RULER 0.57 against 0.47 with TRAINING_MIX, the same passkey and bits/byte.
PRETRAINING_MIX = {
    "passkey": 0.15,
    "niah_single_1": 0.1,
    "niah_single_2": 0.05,
    "niah_single_3": 0.25,
    "niah_multikey_1": 0.1,
    "niah_multikey_2": 0.25,
    "vt": 0.1,
}


MIXES = {"training": TRAINING_MIX, "pretraining": PRETRAINING_MIX}


def parse_mix(text: str) -> dict[str, float]:
    """'passkey=0.3,niah_single_3=0.2' -> {'passkey': 0.3, 'niah_single_3': 0.2}: formats of TRAINING_MIX and their
    relative shares (normalised when drawn), or the name of a whole mix in MIXES ('pretraining': the embedded
    model's own). ValueError naming the bad entry."""
    preset = MIXES.get(text.strip())
    if preset is not None:
        return dict(preset)
    mix: dict[str, float] = {}
    for item in text.split(","):
        name, _, share = (part.strip() for part in item.partition("="))
        if name not in TRAINING_MIX:
            raise ValueError(f"unknown document format {name!r} in {text!r}; known: {', '.join(TRAINING_MIX)} "
                             f"(or one of the whole mixes {', '.join(MIXES)})")
        try:
            mix[name] = float(share)
            valid = mix[name] >= 0   # False for NaN too
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"the share of {name!r} in {text!r} must be a number >= 0, as in {name}=0.2")
    if not sum(mix.values()) > 0:
        raise ValueError(f"the shares in {text!r} must not all be 0")
    return mix


NOISE_FAMILIES = ("noise-sentences", "random-words", "shakespeare-lines")  # short fillers that repeat


class Document(NamedTuple):
    ids: list[int]  # prompt + answer + EOS
    is_answer: list[bool]  # the answer tokens and the EOS that ends them (the tokens worth scoring)


def training_haystacks(rng: random.Random, pool: TextPool | None = None) -> Haystacks:
    """Haystacks of training text: a repeated noise-like filler and shuffled sentences of `pool` (default the
    training plays)."""
    return Haystacks(noise=draw_filler(rng.choice(NOISE_FAMILIES), rng, pool),
                     essay=draw_filler("shuffled-prose", rng, pool), keys="train")


def passkey_document(tokenizer, rng: random.Random, total: int, depth: float,
                     pool: TextPool | None = None) -> Document:
    """A Landmark passkey document of `total` tokens with a training filler and a training key."""
    key = draw_key(rng, random_key, "train")
    filler = " ".join(draw_filler(rng.choice(TRAIN_FAMILIES), rng, pool))
    n_answer = len(passkey_prompt(tokenizer, total, 0.5, key, filler).answer_ids) + 1
    p = passkey_prompt(tokenizer, total - n_answer, depth, key, filler)
    return _document(tokenizer, p.prompt_ids, p.answer_ids)


def training_document(tokenizer, rng: random.Random, total: int, depth: float,
                      mix: dict[str, float] = TRAINING_MIX, pool: TextPool | None = None) -> Document:
    """One document of exactly `total` tokens in a format drawn from `mix`, fillers from `pool` (default the
    training plays); a format that needs more tokens than `total` falls back to passkey (~110 tokens)."""
    fmt = rng.choices(list(mix), weights=list(mix.values()))[0]
    if fmt != "passkey":
        task = TASKS[fmt]
        make = vt_sample if task.kind == "vt" else niah_sample
        try:
            s = make(tokenizer, task, total - 1, depth, rng, training_haystacks(rng, pool))
            return _document(tokenizer, s.prompt_ids, s.answer_ids)
        except ValueError:
            pass
    return passkey_document(tokenizer, rng, total, depth, pool)


def _document(tokenizer, prompt: list[int], answer: list[int]) -> Document:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, which ends every training document")
    # the EOS after the answer is scored too (instruction tuning scores a completion's end token): a fine-tune
    # that scored the digits alone learnt to run on past a 5-digit key into the 7 digits of RULER's values
    return Document(prompt + answer + [tokenizer.eos_token_id], [False] * len(prompt) + [True] * (len(answer) + 1))


def task_rows(tokenizer, n_rows: int, seq_len: int, texts: list[str], seed: int, min_len: int,
              mix: dict[str, float] = TRAINING_MIX) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """[n_rows, seq_len] rows of whole training documents and the [n_rows, seq_len] mask of their answer tokens
    (the tokens fine-tuning scores), for fine-tuning that keeps the retrieval a model was pretrained on.

    Each row is filled with documents of min_len..remaining tokens (half of them as long as the row allows),
    formats drawn from `mix`, fillers from `texts`, keys from the training half, depths `training_depth`, all
    from `seed`.
    """
    pool = text_pool(texts)
    min_len = max(min_len, 112)  # a passkey document's frame and answer
    if seq_len < min_len:
        raise ValueError(f"training documents need at least {min_len} tokens, longer than the rows ({seq_len})")
    rng = random.Random(seed)
    rows, answers = [], []
    for _ in range(n_rows):
        row: list[int] = []
        is_answer: list[bool] = []
        while len(row) < seq_len:
            left = seq_len - len(row)
            total = left if left < 2 * min_len or rng.random() < 0.5 else rng.randint(min_len, left - min_len)
            doc = training_document(tokenizer, rng, total, training_depth(rng), mix, pool)
            row += doc.ids
            is_answer += doc.is_answer
        rows.append(row)
        answers.append(is_answer)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(answers, dtype=torch.bool)
