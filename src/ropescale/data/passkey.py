"""Passkey retrieval prompts in the Landmark Attention format, budgeted in tokens.

Format of Mohtashami & Jaggi, "Landmark Attention" (NeurIPS 2023), epfml/landmark-attention
`llama/run_test.py::generate_prompt`, which LongLoRA, PoSE, YaRN, LongRoPE and Self-Extend reuse:

    <task line>\\n<filler prefix>\\n<key line>\\n<filler suffix>\\n<question>

Landmark cuts the filler in characters; here it is cut in tokens (as PoSE does), so a prompt has exactly the
requested number of tokens whatever the tokenizer. The same function builds the synthetic documents the embedded
model is pretrained on and the prompts of `ropescale eval passkey`, so the two agree token for token.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"


class PasskeyPrompt(NamedTuple):
    """Token ids of one passkey trial. `prompt_ids` ends with "The pass key is"; greedy decoding of
    `len(answer_ids)` tokens must reproduce `answer_ids` (" " + key) for a correct retrieval."""

    prompt_ids: list[int]
    answer_ids: list[int]
    key: str
    key_start: int  # index in prompt_ids of the first token of the key line
    depth: float  # depth actually realised: filler tokens before the key / all filler tokens


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of every text (BOS for Llama-style tokenizers, nothing for GPT-2)."""
    with_special, plain = tokenizer.encode("a"), encode(tokenizer, "a")
    cut = len(with_special) - len(plain)
    return list(with_special[:cut]) if cut > 0 and list(with_special[cut:]) == plain else []


def continuation(tokenizer, prefix: str, text: str) -> list[int]:
    """Tokens of `text` as they follow `prefix` (tokenized together, so a tokenizer that merges the space into the
    previous word still gives the continuation the model would see)."""
    before, full = encode(tokenizer, prefix), encode(tokenizer, prefix + text)
    if full[: len(before)] == before:
        return full[len(before) :]
    return encode(tokenizer, text)


def _answer_ids(tokenizer, key: str) -> list[int]:
    """Tokens of " {key}" as they follow QUESTION."""
    return continuation(tokenizer, QUESTION, f" {key}")


def _frame(tokenizer, key: str) -> tuple[list[int], list[int], list[int]]:
    """The prompt's fixed parts: special prefix + task line, key line, question."""
    head = special_prefix(tokenizer) + encode(tokenizer, TASK + "\n")
    key_line = encode(tokenizer, "\n" + KEY_LINE.format(key=key) + "\n")
    question = encode(tokenizer, "\n" + QUESTION)
    return head, key_line, question


def passkey_prompt(
    tokenizer, length: int, depth: float, key: str, filler: str | None = None
) -> PasskeyPrompt:
    """Build a prompt of exactly `length` tokens (special prefix included) with the key line at `depth`.

    depth: 0.0 puts the key line right after the task line, 1.0 right before the question; the filler
    tokens are split round(depth * n) before and the rest after. filler: the irrelevant text, repeated
    (joined by spaces) as often as needed; default the Landmark sentence `FILLER`. key: the digits to hide.
    Raises ValueError when `length` cannot hold the task, key line and question.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    if not key or not key.isdigit():
        raise ValueError(f"key must be a string of digits, got {key!r}")
    filler = FILLER if filler is None else filler
    if not filler.strip():
        raise ValueError("filler must contain some text")
    head, key_line, question = _frame(tokenizer, key)
    n_filler = length - len(head) - len(key_line) - len(question)
    if n_filler < 0:
        raise ValueError(
            f"length {length} is too short for a passkey prompt: it needs at least "
            f"{length - n_filler} tokens with this tokenizer"
        )
    stream = _filler_tokens(tokenizer, filler, n_filler)
    n_before = round(depth * n_filler)
    before, after = stream[:n_before], stream[: n_filler - n_before]
    prompt = head + before + key_line + after + question
    return PasskeyPrompt(
        prompt_ids=prompt,
        answer_ids=_answer_ids(tokenizer, key),
        key=key,
        key_start=len(head) + n_before,
        depth=n_before / n_filler if n_filler else 0.0,
    )


def _filler_tokens(tokenizer, filler: str, n: int) -> list[int]:
    """At least n tokens of the filler repeated; tokenized as one text so the token boundaries are natural."""
    if n == 0:
        return []
    unit = max(1, len(encode(tokenizer, filler)))
    repeats = math.ceil(n / unit) + 1
    while True:
        ids = encode(tokenizer, " ".join([filler] * repeats))
        if len(ids) >= n:
            return ids
        repeats *= 2


def random_key(rng: random.Random, digits: int = 5) -> str:
    """A key of exactly `digits` digits, no leading zero (Landmark draws 1..50000; here every key has the
    same token count)."""
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def passkey_trials(
    tokenizer, length: int, n: int, seed: int = 0, digits: int = 5, filler: str | None = None
) -> list[PasskeyPrompt]:
    """A fixed set of n trials at one length: depths evenly spread over [0, 1], keys drawn from `seed`."""
    rng = random.Random(seed)
    depths = [i / (n - 1) if n > 1 else 0.5 for i in range(n)]
    return [passkey_prompt(tokenizer, length, d, random_key(rng, digits), filler) for d in depths]


# Share of training documents with the key line at each end (no filler before it, or none between it and the
# question). Uniform depths almost never produce them, and without them fine-tuning on far keys unlearnt copying a
# key that sits right before the question (two probes on the embedded model: 0-50 % at depth 1 against 75-100 % at 0.5).
END_DEPTH_SHARE = 0.1


def training_depth(rng: random.Random) -> float:
    """A key depth for a training document: uniform, and each end `END_DEPTH_SHARE` of the time."""
    u = rng.random()
    return 0.0 if u < END_DEPTH_SHARE else 1.0 if u < 2 * END_DEPTH_SHARE else rng.random()
