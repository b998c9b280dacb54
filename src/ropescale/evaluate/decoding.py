"""Greedy decoding and teacher-forced answer scoring with the KV cache, shared by passkey and needle.

The prompt is run once (`prefill`), keeping logits for its last position only (`logits_to_keep=1`, so a 32K-token
prompt never makes [32K, V] logits). From that cache, `greedy` appends the argmax token step by step and
`answer_nll` feeds the reference answer (teacher forcing) through a copy of the cache.

Shapes: B trials of one cell (equal prompt lengths, so no padding), P prompt tokens, K answer tokens, V vocab.
"""

from __future__ import annotations

import copy
import inspect
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Prefill(NamedTuple):
    cache: object  # a transformers Cache holding the prompt
    last_logits: torch.Tensor  # [B, V] fp32: the next-token distribution after the prompt


def _cache_argument(model) -> str:
    # transformers 5.x renamed the forward argument `past_key_values` to `cache` (the old name still works but
    # warns); pass whichever this model's forward declares
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _step(model, input_ids: torch.Tensor, cache, keep: int):
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=keep, **{_cache_argument(model): cache})
    new_cache = out["cache"] if "cache" in out else out["past_key_values"]
    return new_cache, out.logits.float()


def prefill(model, prompt_ids: torch.Tensor) -> Prefill:
    """Run prompts [B, P] once; keep the KV cache and the last position's logits [B, V]."""
    cache, logits = _step(model, prompt_ids, None, keep=1)
    return Prefill(cache, logits[:, -1])


def greedy(model, state: Prefill, n_new: int) -> torch.Tensor:
    """Greedy continuation [B, n_new] of the prefilled prompts, one cached step per token (consumes the cache)."""
    if n_new < 1:
        raise ValueError(f"n_new must be >= 1, got {n_new}")
    cache, token = state.cache, state.last_logits.argmax(-1)  # [B]
    tokens = [token]
    for _ in range(n_new - 1):
        cache, logits = _step(model, token[:, None], cache, keep=1)
        token = logits[:, -1].argmax(-1)
        tokens.append(token)
    return torch.stack(tokens, dim=1)


def answer_nll(model, state: Prefill, answer_ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL [B, K] (nats) of the reference answers [B, K] given the prompts, teacher-forced.

    Uses a copy of the prefill cache, so `greedy` can run from the same state afterwards.
    """
    logits = state.last_logits[:, None]  # [B, 1, V]: predicts answer token 0
    if answer_ids.shape[1] > 1:
        cache = copy.deepcopy(state.cache)
        _, rest = _step(model, answer_ids[:, :-1], cache, keep=0)  # [B, K-1, V]: predict tokens 1..K-1
        logits = torch.cat([logits, rest], dim=1)
    return F.cross_entropy(logits.transpose(1, 2), answer_ids, reduction="none")  # [B, K]


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def finished(text: str) -> bool:
    """An answer is over once a newline follows some text (RULER's answers are one line)."""
    stripped = text.lstrip()
    return "\n" in stripped


def generate_until(model, tokenizer, state: Prefill, max_new: int) -> list[str]:
    """Greedy continuations of the prefilled prompts, decoded: each stops at EOS, at a newline after some text
    (`finished`), or after `max_new` tokens; the batch stops when every row has. Consumes the cache."""
    if max_new < 1:
        raise ValueError(f"max_new must be >= 1, got {max_new}")
    eos = tokenizer.eos_token_id
    cache, token = state.cache, state.last_logits.argmax(-1)  # [B]
    rows: list[list[int]] = [[] for _ in range(token.shape[0])]
    done = [False] * len(rows)
    for step in range(max_new):
        for b, t in enumerate(token.tolist()):
            if done[b]:
                continue
            if t == eos:
                done[b] = True
                continue
            rows[b].append(t)
            done[b] = finished(tokenizer.decode(rows[b], skip_special_tokens=True))
        if all(done) or step == max_new - 1:
            break
        cache, logits = _step(model, token[:, None], cache, keep=1)
        token = logits[:, -1].argmax(-1)
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
