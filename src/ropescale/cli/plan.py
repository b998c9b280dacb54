"""`ropescale plan`: what to write and pass to serve a model at a target length with a given method, and with
`--gpus G --gpu-memory GB`, what fine-tuning it at that length takes per GPU.

Reads config.json only (local directory or Hub id, never weights), derives L0, θ and head_dim, and prints the
spec, the transformers config keys (5.x and legacy 4.x), vLLM flags and llama.cpp flags with GGUF keys. The memory
part (`ropescale.memory_plan`) predicts the peak of one training step per GPU for every ZeRO stage and
sequence-parallel degree, says whether the asked one fits, and names the smallest that does.

    ropescale plan --model recipes/configs/llama-3-8b --target-length 131072 --gpus 8 --gpu-memory 80 \
        --zero 3 --sequence-parallel 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ropescale.cli.common import add_spec_file_argument, positive_int, spec_file
from ropescale.export.runtimes import gguf_arch, llamacpp_settings, vllm_settings
from ropescale.memory_plan import GiB, NARROW, ZERO_STAGES, Architecture, TrainShape, options, smallest_fit
from ropescale.model_info import ModelInfo, build_spec
from ropescale.models import read_config_dict
from ropescale.rope import METHODS, RopeSpec, frequencies
from ropescale.rope.methods import default_inv_freq, rotary_dim

HELP = "print the rope config, vLLM flags and llama.cpp flags to run a model at a target length"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local checkpoint directory or Hugging Face Hub id")
    parser.add_argument("--target-length", type=int, default=None, help="context length to reach, in tokens "
                        "(required unless --spec gives it)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--method", default=None, choices=list(METHODS), help="scaling method (default: yarn)")
    add_spec_file_argument(chosen)
    parser.add_argument("--head-dim", type=positive_int, default=None, help="override the head dim read from config.json")
    parser.add_argument("--rope-theta", type=float, default=None, help="the new base θ, for --method abf only")
    memory = parser.add_argument_group("memory of a fine-tuning step (printed with --gpus)")
    memory.add_argument("--gpus", type=positive_int, default=None, help="GPUs the run has")
    memory.add_argument("--gpu-memory", dest="gpu_memory", type=float, default=None,
                        help="memory per GPU in GiB (an 80 GB H100 has 79.2 GiB)")
    memory.add_argument("--seq-len", dest="seq_len", type=positive_int, default=None,
                        help="training sequence length (default: --target-length)")
    memory.add_argument("--batch-size", dest="batch_size", type=positive_int, default=1,
                        help="rows per GPU per micro-step (default 1)")
    memory.add_argument("--lora-rank", dest="lora_rank", type=positive_int, default=None,
                        help="LoRA of this rank with trainable embeddings and norms (default: full fine-tune)")
    memory.add_argument("--zero", type=int, choices=ZERO_STAGES, default=None,
                        help="the DeepSpeed ZeRO stage you plan to use (default: the lowest that fits)")
    memory.add_argument("--sequence-parallel", dest="sequence_parallel", type=positive_int, default=None,
                        help="the Ulysses degree you plan to use (default: the smallest that fits)")
    memory.add_argument("--gradient-checkpointing", dest="gradient_checkpointing",
                        action=argparse.BooleanOptionalAction, default=True,
                        help="activation checkpointing (default: on, as finetune does)")


def plan_spec(info: ModelInfo, method: str, target_length: int, rope_theta: float | None = None) -> RopeSpec:
    """The spec that extends the model from L0 to `target_length` with `method`."""
    l0 = info.original_max_position_embeddings
    if target_length < l0:
        raise ValueError(f"--target-length {target_length} is below the model's original context length L0 = {l0}; "
                         f"it must be >= {l0}")
    if method == "default":
        raise ValueError("--method default does not scale the context; choose one of "
                         + ", ".join(m for m in METHODS if m != "default"))
    if (rope_theta is None) == (method == "abf"):
        raise ValueError("--rope-theta is required with --method abf (the new base, e.g. 1000000) and applies "
                         "to no other method")
    knobs = {}
    if info.rope.method == method:  # re-plan a model already scaled this way: keep its method parameters
        knobs = {name: getattr(info.rope, name) for name in METHODS[method].parameters
                 if name not in ("factor", "original_max_position_embeddings")}
    if method == "longrope" and knobs.get("short_factor") is None:
        raise ValueError("--method longrope needs searched short_factor/long_factor lists; plan can only reuse "
                         "them from a model that already uses longrope")
    return build_spec(info, method, target_length / l0, **knobs, rope_theta=rope_theta)


def _frequency_summary(spec, head_dim: int, seq_len: int) -> str:
    """How many frequency pairs are unchanged, divided by s, or in between, compared with plain RoPE, at
    `seq_len` (the dynamic methods depend on it)."""
    inv_freq, _ = frequencies(spec, head_dim, seq_len)
    ratio = inv_freq / default_inv_freq(spec.rope_theta, rotary_dim(head_dim, spec.partial_rotary_factor))
    unchanged = int(((ratio - 1).abs() < 1e-6).sum())
    divided = int(((ratio * spec.factor - 1).abs() < 1e-6).sum()) if spec.factor > 1 else 0
    return (f"{len(ratio)} pairs vs plain RoPE with the same θ: {unchanged} unchanged, {divided} divided by "
            f"{spec.factor:g}, {len(ratio) - unchanged - divided} in between (at {seq_len} tokens)")


def _gguf_value(value: Any) -> str:
    return f"[{len(value)} values]" if isinstance(value, list) else json.dumps(value)


def run(args: argparse.Namespace) -> int:
    config = read_config_dict(args.model)
    info = ModelInfo.from_config(config, args.head_dim)
    spec = spec_file(args, config, others=("target_length", "rope_theta"))
    if spec is None and args.target_length is None:
        raise ValueError("--target-length is required (or --spec FILE, whose factor gives it)")
    spec = spec or plan_spec(info, args.method or "yarn", args.target_length, args.rope_theta)
    head_dim, n = info.head_dim, args.target_length or info.target_length(spec)
    current = info.rope
    _, attention = frequencies(spec, head_dim, n)
    rope_parameters = spec.to_hf(head_dim)
    legacy_theta, legacy_scaling = spec.to_legacy_hf(head_dim)
    vllm = vllm_settings(spec, n, head_dim)
    llamacpp = llamacpp_settings(spec, n, head_dim, arch=gguf_arch(info.model_type))
    shown = {k: v for k, v in dataclasses.asdict(current).items() if k in ("method", "rope_theta")}
    lines = [
        f"model      {args.model}: rope {shown['method']}, rope_theta {shown['rope_theta']:g}, "
        f"L0 {info.original_max_position_embeddings}, head_dim {head_dim}",
        f"target     {n} tokens = {spec.factor:g} x L0 with {spec.method}",
        f"spec       {spec!r}",
        f"attention  scale {attention:.6g} on cos and sin (attention logits x {attention ** 2:.6g})",
        f"frequency  {_frequency_summary(spec, head_dim, n)}",
        "",
        "transformers 5 config.json:",
        f'  "rope_parameters": {json.dumps(rope_parameters)}',
        f'  "max_position_embeddings": {spec.max_position_embeddings()}',
        "transformers 4.x config.json (write these too, so both versions load it alike):",
        f'  "rope_theta": {json.dumps(legacy_theta)}',
        f'  "rope_scaling": {json.dumps(legacy_scaling)}',
        "",
        "vLLM:",
        f"  vllm serve {args.model} {vllm['command']}",
        *(f"  lost: {note}" for note in vllm["lossy"]),
        "",
        "llama.cpp:",
        f"  llama-server -m model.gguf {' '.join(llamacpp['flags'])}",
        "  GGUF metadata: " + ", ".join(f"{k} = {_gguf_value(v)}" for k, v in llamacpp["gguf"].items()),
        *(f"  lost: {note}" for note in llamacpp["lossy"]),
    ]
    if args.gpus is not None or args.gpu_memory is not None:
        lines += ["", *memory_lines(args, config, n)]
    print("\n".join(lines))
    return 0


def _memory_shape(args: argparse.Namespace, target_length: int) -> TrainShape:
    if args.gpus is None or args.gpu_memory is None:
        raise ValueError("--gpus and --gpu-memory go together: the GPUs the run has and the GiB each holds")
    if args.gpu_memory <= 0:
        raise ValueError(f"--gpu-memory must be a positive number of GiB, got {args.gpu_memory:g}")
    if args.sequence_parallel is not None and args.gpus % args.sequence_parallel:
        raise ValueError(f"--sequence-parallel {args.sequence_parallel} must divide --gpus {args.gpus}")
    return TrainShape(seq_len=args.seq_len or target_length, batch_size=args.batch_size,
                      gradient_checkpointing=args.gradient_checkpointing, lora_rank=args.lora_rank, gpus=args.gpus)


def memory_lines(args: argparse.Namespace, config: dict, target_length: int) -> list[str]:
    """The memory part of the plan: the asked configuration, the smallest that fits, and the grid of all."""
    arch, shape = Architecture.from_config(config), _memory_shape(args, target_length)
    limit = int(args.gpu_memory * GiB)
    found = options(arch, shape)
    strategy = f"LoRA rank {shape.lora_rank}" if shape.lora_rank else "full fine-tune"
    ckpt = "activation checkpointing" if shape.gradient_checkpointing else "no activation checkpointing"
    lines = [f"memory     one training step per GPU: {shape.batch_size} x {shape.seq_len} tokens, {strategy}, {ckpt}, "
             f"bf16 on {shape.gpus} x {args.gpu_memory:g} GiB ({arch.parameters / 1e9:.2f}B parameters)"]
    asked = [o for o in found if (args.zero is None or o.zero_stage == args.zero)
             and (args.sequence_parallel is None or o.sequence_parallel == args.sequence_parallel)]
    if args.zero is not None and args.sequence_parallel is not None:
        if not asked:
            raise ValueError(f"--sequence-parallel {args.sequence_parallel} must divide the {arch.num_heads} "
                             "attention heads")
        lines.append(f"  asked      {_option_text(asked[0])}: {_verdict(asked[0].estimate.total, limit)}")
        lines.append(f"             {asked[0].estimate.describe()}")
    best = smallest_fit(found, limit)
    if best is None:
        lines.append(f"  smallest   nothing fits on {shape.gpus} GPUs: shorten --seq-len, use --lora-rank, or add GPUs")
    else:
        lines.append(f"  smallest   {_option_text(best)}: {_verdict(best.estimate.total, limit)}")
    return lines + _grid(found, limit)


def _option_text(option) -> str:
    return f"ZeRO-{option.zero_stage}, sequence parallel {option.sequence_parallel}"


def gib_text(n_bytes: int) -> str:
    return f"{n_bytes / GiB:.1f} GiB"


def _verdict(total: int, limit: int) -> str:
    share = total / limit
    word = "does not fit" if share > 1 else ("fits narrowly" if share > NARROW else "fits")
    return f"{gib_text(total)} per GPU, {share:.0%} of {gib_text(limit)}: {word}"


def _grid(found, limit: int) -> list[str]:
    """GiB per GPU of every option, ZeRO stage by row and sequence-parallel degree by column ("!" over the limit)."""
    degrees = sorted({o.sequence_parallel for o in found})
    lines = ["  GiB per GPU (! = does not fit)   " + "".join(f"{'SP ' + str(n):>9}" for n in degrees)]
    for stage in ZERO_STAGES:
        cells = {o.sequence_parallel: o for o in found if o.zero_stage == stage}
        row = "".join(f"{cells[n].estimate.total / GiB:>8.1f}{'!' if not cells[n].fits(limit) else ' '}"
                      for n in degrees)
        lines.append(f"  ZeRO-{stage}{'':27}{row}")
    return lines
