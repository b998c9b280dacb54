"""LoRA for context extension, as LongLoRA found it works (Chen et al., ICLR 2024, arXiv 2309.12307, §3.3).

Plain LoRA on the attention projections does not adapt a model to a longer context; making the embeddings and
the normalisation layers trainable as well closes most of the gap to full fine-tuning (LongLoRA Table 2;
`fine-tune.py --trainable_params "embed,norm"`, which matches parameter names by substring). Those parameters
are trained in place in the base model, so `merge_and_unload` returns a plain transformers model with both the
merged adapters and the trained embeddings and norms.
"""

from __future__ import annotations


def add_lora(model, rank: int, alpha: float | None, targets: list[str], trainable: list[str]):
    """Wrap `model` with peft LoRA adapters of `rank` on `targets`; unfreeze parameters whose name contains one
    of `trainable` (e.g. "embed", "norm"). Returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, target_modules=list(targets),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # no module matches the targets
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"lora_targets {', '.join(targets)}: peft could not add adapters ({first})") from None
    unfrozen = 0
    for name, param in peft_model.named_parameters():
        if "lora_" not in name and any(key in name for key in trainable):
            param.requires_grad_(True)
            unfrozen += 1
    if trainable and unfrozen == 0:
        raise ValueError(f"lora_trainable {', '.join(trainable)}: no parameter name contains these")
    return peft_model


def merge_lora(model):
    """The plain transformers model with the adapters merged into its weights (trained embed/norm included)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():  # parameters() already yields a tied tensor once
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total
