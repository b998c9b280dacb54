"""`ropescale generate`: continue a prompt with a checkpoint, optionally rescaled in memory first."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "continue a prompt (greedy by default, with the KV cache); --method/--factor rescale the model first"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ropescale.cli.common import (add_force_argument, add_model_argument, add_spec_arguments, finite_float,
                                      positive_int)

    add_model_argument(parser)
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt-file", default=None, help="UTF-8 text file holding the prompt")
    prompt.add_argument("--prompt", default=None, help="the prompt text")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate (default 64)")
    add_spec_arguments(parser)
    parser.add_argument("--temperature", type=finite_float, default=0.0,
                        help="0 (default) = greedy; > 0 samples with this temperature")
    parser.add_argument("--top-p", type=finite_float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every step from the whole sequence (dynamic methods: every key then uses "
                             "the current length's rope, as a full forward does; see README)")
    add_force_argument(parser)


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        text = args.prompt
    else:
        path = Path(args.prompt_file).expanduser()
        if not path.is_file():
            raise ValueError(f"--prompt-file {args.prompt_file!r} is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"--prompt-file {args.prompt_file!r} is not UTF-8 text") from None
    if not text:
        raise ValueError("the prompt is empty; give text with --prompt or --prompt-file")
    return text


def continue_ids(model, input_ids, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, pad_token_id: int | None = None, use_cache: bool = True):
    """The generated token ids (prompt excluded): transformers' `generate` (with the KV cache), greedy when
    `temperature` is 0, else sampling with `temperature` and `top_p` from a generator seeded with `seed`."""
    import torch

    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {top_p}")
    sample = temperature > 0
    options = dict(do_sample=True, temperature=temperature, top_p=top_p) if sample else dict(do_sample=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                             use_cache=use_cache, pad_token_id=pad_token_id,
                             top_k=None, **options)
    return out[0, input_ids.shape[1]:]


def check_generation_memory(model_name, length: int) -> None:
    """ValueError when the prefill of `length` tokens (prompt + new tokens) with its KV cache cannot fit in the CPU
    RAM available (the model is loaded there, fp32); one warning line when it fits narrowly."""
    from ropescale.memory_plan import EvalShape, check_fits, estimate
    from ropescale.models import load_config

    est = estimate(load_config(model_name), EvalShape("prefill", length), "cpu")
    check_fits(est, "cpu", f"generating {length} tokens (prompt and --max-new-tokens)",
               "a shorter prompt or --max-new-tokens, or a machine with more memory")


def run(args: argparse.Namespace) -> int:
    from ropescale.cli.common import quiet_transformers, spec_from_args
    from ropescale.models import load_model, load_tokenizer
    from ropescale.patch import apply

    quiet_transformers()
    prompt = read_prompt(args)
    tokenizer = load_tokenizer(args.model)
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    if not args.force:
        check_generation_memory(args.model, input_ids.shape[1] + args.max_new_tokens)
    model = load_model(args.model)
    spec = spec_from_args(args, model)
    if spec is not None:
        apply(model, spec)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    new = continue_ids(model, input_ids, args.max_new_tokens, args.temperature, args.top_p, args.seed, pad,
                       use_cache=not args.no_cache)
    print(tokenizer.decode(new, skip_special_tokens=True))
    return 0
