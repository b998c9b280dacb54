"""Filler families: the irrelevant text around a hidden fact, and the split between training and evaluation.

A long-context test measures retrieval only if the model has not learnt the filler it is tested on: a model
pretrained around one filler sentence can pass passkey with it and fail with ordinary prose. So the synthetic
documents that teach retrieval (the embedded model's pretraining, passkey rows in fine-tuning) draw their fillers
from `TRAIN_FAMILIES`, and the evaluation's fillers come from `EVAL_FAMILIES`, two of which (`landmark`, `essays`)
are of a kind no training document contains; the other two are training kinds made of held-out text. Keys split
the same way (`key_split`): training documents only hold keys of the "train" half.

A filler is a tuple of sentences used in turn and cyclically (`cycle_sentences`): one sentence for the fillers
that repeat (Landmark's "The grass is green. ..."), many for prose.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import zlib
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import NamedTuple

from ropescale.data.corpus import CORPUS_DIR, embedded_corpus
from ropescale.data.passkey import FILLER

# Landmark Attention's filler, which RULER also uses as its "noise" haystack.
LANDMARK = FILLER

TRAIN_FAMILIES = ("shakespeare-lines", "random-words", "noise-sentences", "shuffled-prose")
EVAL_FAMILIES = ("landmark", "essays", "heldout-lines", "heldout-words")
UNSEEN_FAMILIES = ("landmark", "essays")  # no training document holds text of these kinds
FAMILIES = TRAIN_FAMILIES + EVAL_FAMILIES

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def key_split(key: str) -> str:
    """"train" or "eval": which half of all keys `key` belongs to (a stable hash, so both halves mix every
    digit and letter; training documents hold only "train" keys, evaluations only "eval" keys)."""
    return "eval" if zlib.crc32(key.encode()) % 2 else "train"


def draw_key(rng: random.Random, make, split: str | None) -> str:
    """A key from `make(rng)` that belongs to `split` (any key when split is None)."""
    while True:
        key = make(rng)
        if split is None or key_split(key) == split:
            return key


@functools.cache
def word_list(kind: str) -> tuple[str, ...]:
    """wonderwords' lowercase single-word nouns, adjectives or verbs (RULER draws its keys and words from them)."""
    if kind not in ("noun", "adjective", "verb"):
        raise ValueError(f"kind must be noun, adjective or verb, got {kind!r}")
    text = resources.files("wonderwords.assets").joinpath(f"{kind}list.txt").read_text(encoding="utf-8")
    return tuple(sorted({w for w in text.split() if w.isalpha() and w.islower()}))


def sentences(text: str) -> list[str]:
    """Sentences of a text (split after . ! ?), whitespace collapsed, empty ones dropped."""
    return [s for s in (" ".join(part.split()) for part in _SENTENCE.split(text)) if s]


class TextPool(NamedTuple):
    """Sentences and words of some texts, what the training families draw from."""

    sentences: tuple[str, ...]
    words: tuple[str, ...]


def text_pool(texts: Sequence[str]) -> TextPool:
    """The pool of `texts` (a fine-tuning run's training texts); ValueError when they hold no words."""
    sents = tuple(s for text in texts for s in sentences(text) if len(s) > 3)
    words = tuple(sorted({w for text in texts for w in text.split() if w.isalpha()}))
    if not sents or not words:
        raise ValueError("training documents need text with words and sentences for their fillers")
    return TextPool(sents, words)


@functools.cache
def plays(split: str) -> TextPool:
    """The pool of the embedded corpus' training plays ("train") or held-out plays ("eval")."""
    return text_pool([doc.text for doc in embedded_corpus(split)])


@functools.cache
def essay_sentences() -> tuple[str, ...]:
    """The bundled essays (`assets/corpus/essays.txt`: ordinary modern English prose written for ropescale, which no
    model has been trained on), as sentences."""
    return tuple(sentences((CORPUS_DIR / "essays.txt").read_text(encoding="utf-8")))


def _excerpt(rng: random.Random, pool: tuple[str, ...], n: int) -> tuple[str, ...]:
    start = rng.randrange(len(pool))
    return tuple(pool[(start + i) % len(pool)] for i in range(n))


def _noise_sentences(rng: random.Random) -> tuple[str, ...]:
    # "The <noun> is <adjective>." sentences like Landmark's, never Landmark's own: its nouns are left out
    nouns = [w for w in word_list("noun") if w not in ("grass", "sky", "sun")]
    line = " ".join(f"The {rng.choice(nouns)} is {rng.choice(word_list('adjective'))}."
                    for _ in range(rng.randint(2, 6)))
    return (line,)


def _words(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, ...]:
    return (" ".join(rng.choice(pool) for _ in range(rng.randint(4, 24))),)


def _lines(rng: random.Random, pool: TextPool) -> tuple[str, ...]:
    # a stretch of 1-4 consecutive sentences, repeated: predicting a repeat is copying from context
    return (" ".join(_excerpt(rng, pool.sentences, rng.randint(1, 4))),)


def draw_filler(family: str, rng: random.Random, pool: TextPool | None = None) -> tuple[str, ...]:
    """A filler of `family` drawn with `rng`: sentences to use in turn, cyclically.

    Training families (`pool`, default the training plays, and word lists only): shakespeare-lines (1-4 consecutive sentences of a play,
    repeated), random-words (4-24 random words of the plays, repeated), noise-sentences (2-6 "The <noun> is
    <adjective>." sentences, repeated), shuffled-prose (sentences of the plays in random order, not repeated).
    Evaluation families: landmark (Landmark's filler, repeated), essays (the bundled essays from a random sentence
    on), heldout-lines (the held-out plays from a random sentence on), heldout-words (4-24 random words of the
    held-out plays, repeated).
    """
    if family in TRAIN_FAMILIES:
        pool = pool or plays("train")
    if family == "shakespeare-lines":
        return _lines(rng, pool)
    if family == "random-words":
        return _words(rng, pool.words)
    if family == "noise-sentences":
        return _noise_sentences(rng)
    if family == "shuffled-prose":
        return tuple(rng.sample(pool.sentences, min(60, len(pool.sentences))))  # ~1500 tokens, cycled beyond
    if family == "landmark":
        return (LANDMARK,)
    if family == "essays":
        return _excerpt(rng, essay_sentences(), len(essay_sentences()))
    if family == "heldout-lines":
        return _excerpt(rng, plays("eval").sentences, 2000)
    if family == "heldout-words":
        return _words(rng, plays("eval").words)
    raise ValueError(f"filler family must be one of {', '.join(FAMILIES)}, got {family!r}")


def cycle_sentences(filler: tuple[str, ...]) -> Iterator[str]:
    """The filler's sentences in turn, forever."""
    if not any(s.strip() for s in filler):
        raise ValueError("a filler must contain some text")
    return itertools.cycle(filler)
