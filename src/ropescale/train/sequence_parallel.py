"""Sequence parallelism: each row's sequence split over N processes by DeepSpeed Ulysses, through accelerate.

At 128K tokens one sequence's activations no longer fit one GPU, however the weights are sharded. Ulysses
(Jacobs et al. 2023, arXiv 2309.14509; ALST, arXiv 2506.13996) gives every process of a sequence-parallel group
1/N of the positions; inside attention an all-to-all swaps that for 1/N of the heads over all positions, so each
head sees the whole sequence. accelerate wires it (`ParallelismConfig(sp_size=N, sp_backend="deepspeed")`,
accelerate >= 1.12): at `prepare` it registers DeepSpeed's `UlyssesSPAttentionHF` in place of the model's
attention function and hands DeepSpeed the process groups. No attention code here is ropescale's own.

What this module adds, because ropescale's loop builds its own batches (every process packs the same rows):

- `shard_rows`: the rows of one data-parallel rank, padded to a multiple of N and cut into N contiguous shards,
  with *global* position ids and labels shifted before the cut (a shard's last token is scored against the
  first token of the next shard). PoSE's skipped positions are carried by the position ids, so they survive.
- `GlobalLength`: the rotary embedding of every shard computes its frequencies for the whole sequence. Dynamic
  NTK, dynamic YaRN and LongRoPE's short/long switch derive the length from `max(position_ids) + 1`
  (transformers' `dynamic_rope_update`); on a shard that is the shard's own last position, so shards would
  silently rotate with different frequencies. A forward pre-hook appends one column holding the group's
  maximum position, so the module sees the global length and every other number stays as transformers makes
  it; a forward hook drops that column from cos and sin.
- `check_sequence_parallel`: the constraints, as errors naming `sequence_parallel` (heads divisible by N as
  DeepSpeed requires, a distributed launch of a multiple of N processes, recent enough accelerate/DeepSpeed).

Where it was tested: `tests/train/test_sequence_parallel.py` runs the whole path (accelerate's DeepSpeed engine
with ZeRO-2, Ulysses attention over sdpa, these shards and hooks, activation checkpointing, LoRA, PoSE, gradient
accumulation, checkpoint and resume) in 2 CPU processes over gloo through `torch.distributed.run`, against one
plain process with the same global batch; DeepSpeed runs on its CPU accelerator there. GPU runs (NCCL, bf16,
FlashAttention 2, ZeRO-3, more processes) use the same code and have not been run.
"""

from __future__ import annotations

import math
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, NamedTuple

import torch
from packaging.version import Version

from ropescale.model_info import text_config
from ropescale.rope.hf import config_value
from ropescale.train.loss import IGNORE_INDEX

MIN_DEEPSPEED = "0.18.2"    # accelerate refuses Ulysses with older DeepSpeed (Accelerator._prepare_deepspeed)
MIN_ACCELERATE = "1.12"     # the first accelerate with ParallelismConfig(sp_backend="deepspeed")
INSTALL = "pip install 'ropescale[deepspeed]'"


# ---------------------------------------------------------------------------------------------- checks

def check_installed(installed: Callable[[str], str | None] | None = None) -> None:
    """ValueError naming the install command when DeepSpeed or accelerate is missing or too old.
    `installed(package)` gives a version string or None (default: the installed distributions)."""
    def found(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    installed = installed or found
    for package, needed in (("deepspeed", MIN_DEEPSPEED), ("accelerate", MIN_ACCELERATE)):
        have = installed(package)
        if have is None or Version(have) < Version(needed):
            state = "is not installed" if have is None else f"is {have}"
            raise ValueError(f"`sequence_parallel` needs {package} >= {needed} (DeepSpeed Ulysses through "
                             f"accelerate); {package} {state}: {INSTALL}")


def check_launch(size: int, world_size: int) -> None:
    """N must divide the number of launched processes; N > 1 needs a distributed launch."""
    if size > 1 and world_size == 1:
        raise ValueError(f"`sequence_parallel` {size} splits each row over {size} processes, but this is a single "
                         f"process: launch a multiple of {size}, e.g. torchrun --nproc_per_node {size} -m ropescale "
                         f"finetune ... or accelerate launch --num_processes {size} -m ropescale finetune ...")
    if world_size % size:
        raise ValueError(f"`sequence_parallel` {size} must divide the number of processes, {world_size}")


def check_heads(model_or_config, size: int) -> None:
    """DeepSpeed's rule (UlyssesSPAttentionHF): attention heads divisible by N; key/value heads divisible by N,
    or N divisible by them (each kv head is then replicated over N / kv processes). A model, a transformers
    config or a config.json dict."""
    text = text_config(model_or_config)
    heads = int(config_value(text, "num_attention_heads"))
    kv = int(config_value(text, "num_key_value_heads") or heads)
    if heads % size:
        raise ValueError(f"`sequence_parallel` {size} must divide the model's {heads} attention heads "
                         "(Ulysses gives every process heads / N of them)")
    if kv % size and size % kv:
        raise ValueError(f"`sequence_parallel` {size} and the model's {kv} key/value heads must divide one another "
                         "(DeepSpeed Ulysses splits or replicates them)")


def check_sequence_parallel(size: int, model_or_config, world_size: int) -> None:
    """Every constraint of `sequence_parallel` > 1, cheapest first (`model_or_config` as `check_heads` takes it),
    so that a run that cannot work stops before a process group or a model is made."""
    if size == 1:
        return
    check_installed()
    check_launch(size, world_size)
    check_heads(model_or_config, size)


def launched_world_size() -> int:
    """Processes of this launch, as torchrun and accelerate launch announce it (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# ---------------------------------------------------------------------------------------------- accelerate

def accelerator_kwargs(size: int, micro_batch: int, grad_accum: int, max_grad_norm: float | None,
                       attn_implementation: str, cuda: bool) -> dict:
    """Arguments of `accelerate.Accelerator` for Ulysses over `size` processes.

    The DeepSpeed plugin reads `accelerate launch`'s DeepSpeed settings (a config file or --zero_stage; ZeRO-2 when
    none are given, accelerate's default); the micro-batch, gradient accumulation and clipping come from the
    run's settings where those leave them "auto". On CPU accelerate would not hand DeepSpeed a process group, so
    the gloo backend is named (DeepSpeed then runs on its CPU accelerator).
    """
    # imported here: these exist only in accelerate >= 1.12, which `check_installed` asked for
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, ParallelismConfig
    from accelerate.utils.dataclasses import DeepSpeedSequenceParallelConfig

    plugin = DeepSpeedPlugin(gradient_accumulation_steps=grad_accum, gradient_clipping=max_grad_norm or 0.0)
    if plugin.is_auto("train_micro_batch_size_per_gpu"):
        # ropescale feeds batches itself (no DataLoader), which is where accelerate would read it
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch
    for field, key, value in (("grad_accum", "gradient_accumulation_steps", grad_accum),
                              ("batch_size", "train_micro_batch_size_per_gpu", micro_batch)):
        if plugin.deepspeed_config.get(key) != value:   # a DeepSpeed config file set its own
            raise ValueError(f"`{field}` is {value} but the DeepSpeed config file sets {key} to "
                             f"{plugin.deepspeed_config.get(key)}; give both the same value, or \"auto\" in the file")
    parallelism = ParallelismConfig(sp_size=size, sp_backend="deepspeed", sp_handler=DeepSpeedSequenceParallelConfig(
        sp_seq_length_is_variable=True, sp_attn_implementation=attn_implementation))
    handlers = [] if cuda else [InitProcessGroupKwargs(backend="gloo")]
    return {"parallelism_config": parallelism, "deepspeed_plugin": plugin, "kwargs_handlers": handlers}


class Group(NamedTuple):
    """This process's place: `rank` within its sequence-parallel group of `size`, the group's process group, and
    the data-parallel coordinates of the group (which rows it trains on)."""

    size: int
    rank: int
    group: object            # torch.distributed ProcessGroup (None when size is 1)
    dp_rank: int
    dp_size: int


def current_group(size: int, process_index: int, num_processes: int) -> Group:
    """The sequence-parallel group DeepSpeed built at `accelerator.prepare` (consecutive ranks form a group)."""
    if size == 1:
        return Group(1, 0, None, process_index, num_processes)
    from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu

    rank = mpu.get_sequence_parallel_rank()
    if mpu.get_sequence_parallel_world_size() != size or rank != process_index % size:
        raise RuntimeError(f"DeepSpeed's sequence-parallel groups are not consecutive ranks of {size}")
    return Group(size, rank, mpu.get_sequence_parallel_group(), process_index // size, num_processes // size)


# ---------------------------------------------------------------------------------------------- data

class Shard(NamedTuple):
    """One process's part of a micro-batch: [B, T'/N] each, T' the row length padded to a multiple of N."""

    input_ids: torch.LongTensor
    position_ids: torch.LongTensor
    labels: torch.LongTensor


def padded_length(seq_len: int, size: int) -> int:
    return math.ceil(seq_len / size) * size


def shard_rows(input_ids: torch.LongTensor, labels: torch.LongTensor, position_ids: torch.LongTensor | None,
               size: int, rank: int, pad_id: int) -> Shard:
    """Shard `rank` of `size` of whole rows.

    input_ids, labels (already shifted: labels[t] is the target predicted at t), position_ids (None: 0..T-1) are
    [B, T]. Rows are padded on the right to T' = a multiple of `size`: pad tokens `pad_id`, targets ignored, and
    position ids repeating the row's last position, so that `max(position_ids)` (what dynamic rope types read)
    is the unpadded row's and the real tokens, which never attend to later ones, are computed as without padding.
    """
    batch, seq_len = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(seq_len, device=input_ids.device).expand(batch, seq_len)
    pad = padded_length(seq_len, size) - seq_len
    if pad:
        input_ids = torch.cat([input_ids, input_ids.new_full((batch, pad), pad_id)], dim=1)
        labels = torch.cat([labels, labels.new_full((batch, pad), IGNORE_INDEX)], dim=1)
        position_ids = torch.cat([position_ids, position_ids[:, -1:].expand(batch, pad)], dim=1)
    width = input_ids.shape[1] // size
    part = slice(rank * width, (rank + 1) * width)
    return Shard(input_ids[:, part], position_ids[:, part].contiguous(), labels[:, part])


# ---------------------------------------------------------------------------------------------- rotary length

class GlobalLength:
    """Forward hooks that make a rotary-embedding module compute frequencies for the whole sequence on a shard.

    `group_max(local_max) -> global_max` reduces a 0-d position over the sequence-parallel group (an all-reduce
    MAX; tests pass a plain function). The pre-hook appends to position_ids [B, t] a column holding the global
    maximum, so transformers' dynamic update sees `max + 1` = the global length; the hook after forward drops
    that column from (cos, sin) [B, t + 1, d]. Static rope types compute the same cos and sin either way.
    """

    def __init__(self, group_max: Callable[[torch.Tensor], torch.Tensor]):
        self.group_max = group_max

    def before(self, module, args, kwargs):
        x, position_ids = (args[0], args[1]) if len(args) > 1 else (args[0], kwargs.pop("position_ids"))
        top = self.group_max(position_ids.max())
        extended = torch.cat([position_ids, top.to(position_ids).expand(position_ids.shape[0], 1)], dim=1)
        return (x, extended, *args[2:]), kwargs

    @staticmethod
    def after(module, args, kwargs, output):
        cos, sin = output
        return cos[..., :-1, :], sin[..., :-1, :]


def rotary_modules(model) -> list[torch.nn.Module]:
    """The rotary-embedding modules of a transformers model (they hold `inv_freq` and a `rope_type`)."""
    return [m for m in model.modules() if hasattr(m, "inv_freq") and hasattr(m, "rope_type")]


def install_global_length(model, group_max: Callable[[torch.Tensor], torch.Tensor]) -> list:
    """`GlobalLength` hooks on every rotary module of `model`; returns the handles (`.remove()` undoes them)."""
    hook, handles = GlobalLength(group_max), []
    modules = rotary_modules(model)
    if not modules:
        raise ValueError(f"model {type(model).__name__} has no rotary embedding module; sequence parallelism needs "
                         "one to give every shard the global length")
    for module in modules:
        handles.append(module.register_forward_pre_hook(hook.before, with_kwargs=True))
        handles.append(module.register_forward_hook(hook.after, with_kwargs=True))
    return handles


def all_reduce(group, op: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tensor reduced over `group` ("max": the global length; "sum": token counts), without gradient."""
    reduce_op = {"max": torch.distributed.ReduceOp.MAX, "sum": torch.distributed.ReduceOp.SUM}[op]

    def reduced(value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone()
        torch.distributed.all_reduce(value, op=reduce_op, group=group)
        return value

    return reduced
