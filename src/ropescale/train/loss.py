"""Next-token loss computed from final hidden states in chunks of positions.

Full-vocabulary logits for a whole long sequence never exist at once: at 128K tokens and a 128K vocabulary
they would be 63 GiB in fp32. Each chunk projects `chunk_size` positions through the output layer, takes the
cross-entropy, and (when gradients are on) is wrapped in activation checkpointing so that its logits are
recomputed in the backward pass instead of being kept.

Shapes: B batch, T positions, H hidden size, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100

# fp32 logits per chunk: 2**25 elements = 128 MiB (cross-entropy keeps about one more such buffer). With
# Llama 3's 128K vocabulary that is ~260 positions per chunk; with 32K, ~1000; a small vocabulary gets a few
# thousand. Smaller chunks cost nothing measurable in time (benchmarks/eval_memory.py) and bound the memory.
LOGITS_BUDGET_ELEMENTS = 2**25


def auto_chunk_size(batch: int, vocab: int) -> int:
    """Positions per chunk so that a chunk's logits [batch, chunk, vocab] stay within the budget."""
    return max(16, LOGITS_BUDGET_ELEMENTS // max(1, batch * vocab))


def output_logits_fn(model):
    """The map hidden [.., H] -> logits [.., V] of a transformers causal LM, with its logit post-processing.

    Cohere multiplies by `logit_scale`; Gemma 2/3 apply `final_logit_softcapping`. Both are read from the config
    so the chunked loss equals the model's own `forward(labels=...)`.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"model {type(model).__name__} has no output embeddings; ropescale needs a causal LM")
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    scale = getattr(text_config, "logit_scale", None)
    softcap = getattr(text_config, "final_logit_softcapping", None)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(hidden)
        if scale is not None:
            out = out * scale
        if softcap is not None:
            out = torch.tanh(out / softcap) * softcap
        return out.float()

    return logits


def final_hidden_states(model, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """Run the decoder stack only (no output layer): [B, T] -> [B, T, H]."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise ValueError(f"model {type(model).__name__} has no decoder stack that ropescale can run")
    return decoder(input_ids=input_ids, **kwargs).last_hidden_state


def _chunk_nll(logits_fn, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # hidden [B, c, H], targets [B, c] -> per-token NLL [B, c] (0 where ignored). Cross-entropy runs on the
    # contiguous [B·c, V] rows: on the transposed [B, V, c] view it is ~5x slower on CPU (strided softmax).
    logits = logits_fn(hidden)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="none")
    return nll.view(targets.shape)


def token_nll(logits_fn, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Per-position NLL of `labels` under the next-token distribution, in nats.

    hidden: [B, T, H] final hidden states; labels: [B, T] token ids aligned with `hidden` (labels[t] is the
    token *after* position t is predicted, i.e. already shifted by the caller) or IGNORE_INDEX.
    Returns [B, T] fp32 with 0 at ignored positions. Gradients flow when enabled, with each chunk's logits
    recomputed in backward.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    pieces = []
    for start in range(0, hidden.shape[1], chunk_size):
        h = hidden[:, start : start + chunk_size]
        y = labels[:, start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_nll, logits_fn, h, y, use_reentrant=False))
        else:
            pieces.append(_chunk_nll(logits_fn, h, y))
    return torch.cat(pieces, dim=1)


def shift_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """labels[t] = input_ids[t + 1]; the last position (and padded targets) get IGNORE_INDEX."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    if attention_mask is not None:
        labels[:, :-1][attention_mask[:, 1:] == 0] = IGNORE_INDEX
    return labels


def row_nll(model, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
            chunk_size: int | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token NLL (nats) summed over each row's scored tokens [B], and each row's number of them [B].

    `labels` defaults to the shifted `input_ids`; pass your own (already shifted) to score only some positions.
    `chunk_size` None sizes chunks from the vocabulary (`auto_chunk_size`).
    Extra kwargs (position_ids, attention_mask, ...) go to the decoder.
    """
    if labels is None:
        labels = shift_labels(input_ids, kwargs.get("attention_mask"))
    hidden = final_hidden_states(model, input_ids, **kwargs)
    if chunk_size is None:
        chunk_size = auto_chunk_size(input_ids.shape[0], model.get_output_embeddings().weight.shape[0])
    nll = token_nll(output_logits_fn(model), hidden, labels, chunk_size)
    return nll.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1)


def causal_lm_loss(model, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                   chunk_size: int | None = None, **kwargs) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL (nats) and the number of scored tokens, from chunked logits (arguments of
    `row_nll`)."""
    nll, n = row_nll(model, input_ids, labels, chunk_size, **kwargs)
    return nll.sum(), int(n.sum())
