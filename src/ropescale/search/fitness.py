"""What a candidate of the search is scored on: training text only, never the evaluation split.

- `perplexity`: mean next-token NLL (nats) over `samples` windows of `length` tokens of training text (the
  embedded corpus' training plays, or a user's `data` read with split "train"), LongRoPE's fitness (it used 5
  PG19 samples at the target length).
- `needle`: mean NLL of the answer tokens (and the EOS after them) in `samples` synthetic retrieval documents of
  `length` tokens (passkey and RULER formats, `ropescale.data.synthetic.training_document`), built from the
  training filler families and the training half of the keys: LongRoPE2's "needle-driven" perplexity.

Shapes: n samples, L = length. Scores are nats per scored token; lower is better.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import torch

from ropescale.data.fillers import plays, text_pool
from ropescale.data.synthetic import TRAINING_MIX, training_document
from ropescale.patch import apply
from ropescale.rope import RopeSpec
from ropescale.train.loss import IGNORE_INDEX, causal_lm_loss

FITNESSES = ("perplexity", "needle")
TRAIN_SPLIT = "train"


class FitnessData(NamedTuple):
    """The scored windows: input_ids [n, L] and labels [n, L] (already shifted; IGNORE_INDEX where not scored)."""

    input_ids: torch.Tensor
    labels: torch.Tensor


def _training_docs(data: str, text_field: str):
    from ropescale.data import load_texts

    return load_texts(data, text_field=text_field, split=TRAIN_SPLIT)


def perplexity_data(tokenizer, length: int, samples: int, data: str = "embedded",
                    text_field: str = "text") -> FitnessData:
    """`samples` consecutive windows of `length` tokens of training text (BOS + stream tokens, as
    `ropescale.evaluate.perplexity.windows` builds them); ValueError naming `samples` when the text is short."""
    from ropescale.evaluate.perplexity import windows

    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; perplexity windows join documents with EOS")
    stream: list[int] = []
    needed = samples * length
    for doc in _training_docs(data, text_field):  # tokenize only as much text as the windows need
        stream += list(tokenizer.encode(doc.text, add_special_tokens=False)) + [tokenizer.eos_token_id]
        if len(stream) >= needed:
            break
    ids, labels = windows(stream, length, tokenizer.bos_token_id, max_windows=samples)
    if len(ids) < samples:
        raise ValueError(f"`samples`: the training text of {data!r} holds {len(ids)} windows of {length} tokens, "
                         f"not {samples}; ask for fewer samples or give more text")
    return FitnessData(ids, labels)


def needle_data(tokenizer, length: int, samples: int, seed: int, data: str = "embedded",
                text_field: str = "text", mix: dict[str, float] = TRAINING_MIX) -> FitnessData:
    """`samples` retrieval documents of exactly `length` tokens, key depths evenly spread over [0, 1], formats
    drawn from `mix`, fillers from the training families (of the training plays, or of `data`'s training
    split) and keys from the training half; only the answer tokens and their EOS are scored."""
    pool = plays(TRAIN_SPLIT) if data == "embedded" else text_pool([d.text for d in _training_docs(data, text_field)])
    rng = random.Random(f"search-needle:{seed}")  # str seeds are stable across processes
    rows, labels = [], []
    for i in range(samples):
        try:
            doc = training_document(tokenizer, rng, length, i / (samples - 1) if samples > 1 else 0.5, mix, pool)
        except ValueError as exc:
            raise ValueError(f"`length` {length} is too short for the needle fitness's documents ({exc})") from None
        ids = torch.tensor(doc.ids, dtype=torch.long)
        target = torch.full_like(ids, IGNORE_INDEX)
        answer = torch.tensor(doc.is_answer[1:], dtype=torch.bool)
        target[:-1] = torch.where(answer, ids[1:], IGNORE_INDEX)  # label[t] = token t+1 when it is an answer token
        rows.append(ids)
        labels.append(target)
    return FitnessData(torch.stack(rows), torch.stack(labels))


def fitness_data(fitness: str, tokenizer, length: int, samples: int, seed: int, data: str = "embedded",
                 text_field: str = "text") -> FitnessData:
    """The data `fitness` scores; ValueError naming `fitness` when it is not one of FITNESSES."""
    if fitness == "perplexity":
        return perplexity_data(tokenizer, length, samples, data, text_field)
    if fitness == "needle":
        return needle_data(tokenizer, length, samples, seed, data, text_field)
    raise ValueError(f"`fitness` must be one of {', '.join(FITNESSES)}, got {fitness!r}")


def score(model, spec: RopeSpec, data: FitnessData, batch_size: int = 1) -> float:
    """Mean NLL (nats) per scored token of `data` under `model` with `spec` applied (in place); inf when the
    model's numbers overflow."""
    apply(model, spec)
    device = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data.input_ids), batch_size):
            nll, count = causal_lm_loss(model, data.input_ids[i : i + batch_size].to(device),
                                        data.labels[i : i + batch_size].to(device))
            total, n = total + float(nll), n + count
    value = total / n if n else math.inf
    return value if math.isfinite(value) else math.inf
