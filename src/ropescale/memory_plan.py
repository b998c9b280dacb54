"""Peak memory of one unit of work, predicted from a model's config: a training step or an evaluation unit.

The model is counted from what ropescale's code allocates, tensor by tensor, per token of a sequence, and the
few constants that are not a tensor's size (the runtime's own working memory, the allocator's slack) are measured:
`benchmarks/memory_plan.py` compares every prediction with the peak resident memory of a fresh process on CPU and
its table in `benchmarks/README.md` says how close they are. `ropescale plan --gpus ...` prints these numbers; the
commands check them against the device before they allocate anything (`check_fits`).

Architecture: a Llama-family decoder (Llama, Mistral, Qwen2/3, Gemma, Phi-3): L layers, hidden H, query heads
nh and KV heads nkv of head_dim hd, a gated MLP of width I, vocabulary V, tied or separate output layer.

A training step (`ropescale.train.finetune`):
- weights, gradients, AdamW state. fp32 on CPU and under DDP/FSDP with bf16 autocast (accelerate's mixed
  precision keeps fp32 master weights): 4 bytes weight + 4 gradient + 8 AdamW (exp_avg, exp_avg_sq) per trainable
  parameter, 4 per frozen one, plus autocast's bf16 copies of the trainable matrices on CUDA. DeepSpeed ZeRO with
  bf16: 2 + 2 + 12 (fp32 master, exp_avg, exp_avg_sq), 2 per frozen parameter. ZeRO stage 1 shards the optimiser
  state over the G GPUs, stage 2 the gradients too, stage 3 the weights too (two layers gathered at a time).
- activations. With activation checkpointing (the default) each layer keeps its input [B, T, H] and one layer
  at a time is recomputed in the backward pass with everything it saves; without, every layer keeps all of it.
  Attention is SDPA/FlashAttention (no [T, T] scores). Sequence parallelism of degree N (DeepSpeed Ulysses)
  gives every GPU T/N positions and adds the all-to-all buffers of q, k, v and the attention output.
- loss. `ropescale.train.loss`: logits exist for one chunk of positions at a time, recomputed in the backward
  pass: fp32 [B, chunk, V] buffers (`LOSS_BUFFERS`).
The parts are added (`train_estimate` says why), and the CPU constants are fitted to measured peaks.
An evaluation unit (`ropescale.evaluate`): a perplexity window of T tokens (one layer's working set at a time, plus
the chunked logits and their log-softmax), or a prefill with the KV cache (passkey keeps a second copy of it to
score the answer, `decoding.answer_nll`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ropescale.rope.hf import config_head_dim, config_value, text_part
from ropescale.train.config import LORA_TARGETS
from ropescale.train.loss import LOGITS_BUDGET_ELEMENTS

GiB = 2**30
MiB = 2**20
NARROW = 0.85   # above this share of the available memory a run is said to fit narrowly
ZERO_STAGES = (0, 1, 2, 3)
EVAL_KINDS = ("window", "prefill", "passkey")

# Calibrated on CPU by benchmarks/memory_plan.py, on the embedded model's cases only (least squares of the relative
# error: measured peak RSS − RSS before the model = counted tensors + RUNTIME + (FACTOR − 1) × counted activations);
# the other models' cases validate them (README's table). RUNTIME: what the runtime itself adds (autograd's engine
# and thread pools, oneDNN scratch). ACTIVATION_FACTOR: per counted activation element, what the count misses (the
# attention kernels' own buffers, freed blocks that the allocator keeps resident).
CPU_RUNTIME = {"train": 59 * MiB, "eval": 18 * MiB}
ACTIVATION_FACTOR = {"train": 1.37, "eval": 1.19}
# On CUDA: cuBLAS workspaces and the caching allocator's fragmentation; not measured here (no GPU), the usual
# allowance of PyTorch users, so a CUDA verdict near the limit deserves a measured run.
CUDA_RUNTIME = {"train": 1 * GiB, "eval": 512 * MiB}
CUDA_SLACK = 1.10
# Buffers of [B, chunk, V] fp32 alive at once in the chunked loss. Evaluation: the logits and their log-softmax.
# Training recomputes the logits in the backward pass and keeps the log-softmax and its gradient; the logits'
# gradient exists only inside log_softmax's backward, and the measured peaks (the fit above, the tests' tiny model)
# agree with two buffers, not three.
LOSS_BUFFERS = {"train": 2, "eval": 2}


@dataclass(frozen=True)
class Architecture:
    """The sizes of a decoder that its memory depends on, read from a config by `from_config`."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied: bool
    attention_bias: bool = False
    qk_norm: bool = False   # Qwen3 normalises q and k per head: 2·head_dim weights per layer

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        """From a transformers config, a model, or a config.json dict (a multimodal wrapper's text part)."""
        config = getattr(config, "config", config)
        if isinstance(config, Mapping):
            text = text_part(config)
        else:
            text = config.get_text_config() if hasattr(config, "get_text_config") else config
        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
        missing = [n for n in names if not config_value(text, n)]
        if missing:
            raise ValueError(f"the model's config has no {', '.join(missing)}: ropescale cannot estimate its memory")
        heads = int(config_value(text, "num_attention_heads"))
        bias = config_value(text, "attention_bias")
        if bias is None:   # Qwen2's q, k and v projections always have a bias; its config has no key for it
            bias = config_value(text, "model_type") == "qwen2"
        tied = config_value(text, "tie_word_embeddings")
        if tied is None:
            tied = config_value(config, "tie_word_embeddings")
        return cls(hidden_size=int(config_value(text, "hidden_size")),
                   num_layers=int(config_value(text, "num_hidden_layers")), num_heads=heads,
                   num_kv_heads=int(config_value(text, "num_key_value_heads") or heads),
                   head_dim=int(config_head_dim(text)), intermediate_size=int(config_value(text, "intermediate_size")),
                   vocab_size=int(config_value(text, "vocab_size")), tied=bool(tied if tied is not None else True),
                   attention_bias=bool(bias), qk_norm=config_value(text, "model_type") == "qwen3")

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def attention_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each attention projection: what LoRA adapts."""
        h = self.hidden_size
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h)}

    @property
    def layer_parameters(self) -> int:
        attention = sum(i * o for i, o in self.attention_shapes().values())
        bias = (self.q_dim + 2 * self.kv_dim) if self.attention_bias else 0
        norms = 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        return attention + bias + 3 * self.hidden_size * self.intermediate_size + norms

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def parameters(self) -> int:
        outputs = 0 if self.tied else self.embedding_parameters
        return self.num_layers * self.layer_parameters + self.embedding_parameters + outputs + self.hidden_size

    def lora_parameters(self, rank: int, targets=LORA_TARGETS) -> int:
        """Parameters of the LoRA adapters (`ropescale.train.lora.add_lora`): rank·(in + out) per adapted matrix."""
        return self.num_layers * sum(rank * (i + o) for name, (i, o) in self.attention_shapes().items()
                                     if name in targets)

    def trained_beside_lora(self, trainable=("embed", "norm")) -> int:
        """Base parameters LongLoRA trains beside the adapters: the embeddings (a tied output layer is the same
        tensor) and the norms."""
        embed = self.embedding_parameters if any("embed" in t for t in trainable) else 0
        norms = (2 * self.num_layers + 1) * self.hidden_size if any("norm" in t for t in trainable) else 0
        return embed + norms


@dataclass(frozen=True)
class TrainShape:
    """One training step: `batch_size` rows of `seq_len` tokens per process, and how the run is spread."""

    seq_len: int
    batch_size: int = 1
    gradient_checkpointing: bool = True
    lora_rank: int | None = None
    loss_chunk_size: int | None = None
    gpus: int = 1
    zero_stage: int = 0
    sequence_parallel: int = 1
    data_tokens: int = 0   # packed training rows held in memory (int64), e.g. steps × global batch × seq_len

    def __post_init__(self):
        _positive(seq_len=self.seq_len, batch_size=self.batch_size, gpus=self.gpus,
                  sequence_parallel=self.sequence_parallel)
        if self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"`zero_stage` must be one of 0, 1, 2, 3, got {self.zero_stage}")
        if self.gpus % self.sequence_parallel:
            raise ValueError(f"`sequence_parallel` {self.sequence_parallel} must divide the {self.gpus} GPUs")
        _positive(lora_rank=self.lora_rank, loss_chunk_size=self.loss_chunk_size)


@dataclass(frozen=True)
class EvalShape:
    """One evaluation unit: `kind` window (perplexity), prefill (RULER, needle, generate: one KV cache) or
    passkey (a prefill whose cache is copied once to score the answer), `batch_size` rows of `seq_len` tokens."""

    kind: str
    seq_len: int
    batch_size: int = 1
    chunk_size: int | None = None
    models: int = 1   # copies of the weights held at once (short-context loads its baseline beside the model)

    def __post_init__(self):
        if self.kind not in EVAL_KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(EVAL_KINDS)}, got {self.kind!r}")
        _positive(seq_len=self.seq_len, batch_size=self.batch_size, chunk_size=self.chunk_size, models=self.models)


def _positive(**values) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Estimate:
    """Predicted peak bytes of one unit of work on one device (per GPU), by part."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{name} {gib(value)}" for name, value in self.parts.items() if value)


def gib(n_bytes: float) -> str:
    """Bytes as a short GiB figure: 0.25 GiB, 3.1 GiB, 412 GiB."""
    value = n_bytes / GiB
    return f"{value:.2g} GiB" if value < 10 else f"{value:.0f} GiB"


# ------------------------------------------------------------------------------------ activations, per token

def layer_saved(arch: Architecture, lora_rank: int | None = None) -> int:
    """Elements per token that one decoder layer keeps for its backward pass, besides its input: two RMSNorms
    (normalised value and output, 2H each), the attention residual (H), v and the rotated q and k that SDPA saves,
    its output and the contiguous copy that o_proj saves (2·q_dim), its log-sum-exp (nh), and the gated MLP's
    gate, up, silu(gate) and their product (4I). LoRA adds, per adapted projection (q, k, v, o), six tensors of its
    output's size: peft computes base(x) + lora_B(lora_A(x))·scaling (the base output, lora_B's output, the scaled
    copy, the sum) and the backward pass the gradients of two of them."""
    h, i, q, kv = arch.hidden_size, arch.intermediate_size, arch.q_dim, arch.kv_dim
    lora = 0 if lora_rank is None else 6 * (q + 2 * kv + h) + 4 * lora_rank
    return 5 * h + 3 * q + 2 * kv + arch.num_heads + 4 * i + lora


def layer_backward(arch: Architecture) -> int:
    """Elements per token alive on top of the saved ones while a layer runs backward: the gradient flowing in and
    out of it (2H) and the MLP's gradients of gate, up and their product (3I)."""
    return 2 * arch.hidden_size + 3 * arch.intermediate_size


def layer_forward(arch: Architecture) -> int:
    """Elements per token alive at once when a layer runs without gradients: the residual, the normalised input and
    the MLP's silu(gate), up and product (the MLP is the widest moment of a Llama layer; attention's q, k, v,
    rotated copies and output are less for every published shape)."""
    h, q, kv = arch.hidden_size, arch.q_dim, arch.kv_dim
    return max(2 * h + 3 * arch.intermediate_size, 2 * h + 3 * q + 3 * kv)


def ulysses_buffers(arch: Architecture) -> int:
    """Elements per local token of DeepSpeed Ulysses' all-to-alls in one layer: q, k, v sent and received, and the
    attention output sent back (each a second copy of its tensor)."""
    return 2 * (arch.q_dim + 2 * arch.kv_dim) + 2 * arch.q_dim


def loss_chunk_elements(arch: Architecture, batch: int, tokens: int, chunk_size: int | None) -> int:
    """Elements of one chunk's logits [B, chunk, V] (`ropescale.train.loss.auto_chunk_size` when None)."""
    chunk = chunk_size or max(16, LOGITS_BUDGET_ELEMENTS // max(1, batch * arch.vocab_size))
    return batch * min(chunk, tokens) * arch.vocab_size


# ------------------------------------------------------------------------------------ estimates

def _trainable(arch: Architecture, shape: TrainShape) -> tuple[int, int, int, int]:
    """Trainable parameters, in the order the backward pass produces their gradients: (the output layer, the decoder
    layers and final norm, everything), and the frozen ones."""
    if shape.lora_rank is None:
        layers = arch.num_layers * arch.layer_parameters + arch.hidden_size
        return arch.embedding_parameters, layers, arch.parameters, 0
    # the adapters come on top of the base model's weights, which stay frozen but for embed and norms; a tied
    # output layer is the (trainable) embedding
    beside = arch.trained_beside_lora()
    head = arch.embedding_parameters if arch.tied else 0
    layers = arch.lora_parameters(shape.lora_rank) + (2 * arch.num_layers + 1) * arch.hidden_size
    return head, layers, arch.lora_parameters(shape.lora_rank) + beside, arch.parameters - beside


def _state_bytes(arch: Architecture, shape: TrainShape, cuda: bool) -> tuple[dict[str, int], tuple[int, int, int]]:
    """Weights and optimiser state per GPU, and the gradients (output layer, + decoder layers, all) per GPU (see
    the module docstring for the bytes per parameter)."""
    head, layers, trainable, frozen = _trainable(arch, shape)
    deepspeed_bf16 = cuda and (shape.zero_stage > 0 or shape.sequence_parallel > 1)   # Ulysses runs on DeepSpeed
    weight, grad, adam, frozen_bytes = (2, 2, 12, 2) if deepspeed_bf16 else (4, 4, 8, 4)
    g, stage = shape.gpus, shape.zero_stage
    weights = (trainable * weight + frozen * frozen_bytes) / (g if stage == 3 else 1)
    if stage == 3:   # the layer being computed and the next one, prefetched, gathered whole
        weights += 2 * max(arch.layer_parameters, arch.embedding_parameters) * weight
    if cuda and not deepspeed_bf16:   # autocast caches a bf16 copy of every trainable weight it multiplies
        weights += 2 * trainable
    per_grad = grad / (g if stage >= 2 else 1)
    grads = (int(head * per_grad), int((head + layers) * per_grad), int(trainable * per_grad))
    return {"weights": int(weights), "optimizer": int(trainable * adam / (g if stage >= 1 else 1))}, grads


def train_estimate(arch: Architecture, shape: TrainShape, device: str = "cpu") -> Estimate:
    """Peak bytes of one training step per process (per GPU) on `device` ("cpu" or "cuda").

    The parts are added as if they were all alive at once. Within the backward pass they are not quite (the loss's
    buffers are gone before the first layer is recomputed, the embedding's gradient comes last), but the peak
    resident memory measured on CPU is close to the sum and well above the largest moment: what the allocator freed
    stays resident (benchmarks/memory_plan.py, and README's table).
    """
    cuda = device == "cuda"
    act = 2 if cuda else 4 * ACTIVATION_FACTOR["train"]   # bf16 autocast on CUDA, fp32 on CPU
    tokens = shape.batch_size * math.ceil(shape.seq_len / shape.sequence_parallel)   # this GPU's positions
    saved = layer_saved(arch, shape.lora_rank)
    # every layer's input (or, without checkpointing, everything every layer saves), the final norm, cos and sin,
    # and the layer being recomputed and differentiated
    per_token = arch.num_layers * (arch.hidden_size if shape.gradient_checkpointing else arch.hidden_size + saved)
    per_token += 4 * arch.hidden_size + 2 * arch.head_dim + layer_backward(arch)
    per_token += saved if shape.gradient_checkpointing else 0
    per_token += ulysses_buffers(arch) if shape.sequence_parallel > 1 else 0
    chunk = loss_chunk_elements(arch, shape.batch_size, tokens // shape.batch_size, shape.loss_chunk_size)
    state, (_, _, gradients) = _state_bytes(arch, shape, cuda)
    parts = {"weights": state["weights"], "gradients": gradients, "optimizer": state["optimizer"],
             "activations": int(per_token * tokens * act), "loss": LOSS_BUFFERS["train"] * chunk * 4}
    parts["runtime"] = _runtime("train", sum(parts.values()), cuda)
    return Estimate({**parts, "data": 8 * shape.data_tokens})


def eval_estimate(arch: Architecture, shape: EvalShape, device: str = "cpu", dtype_bytes: int = 4) -> Estimate:
    """Peak bytes of one evaluation unit on `device` with weights of `dtype_bytes` (4 fp32, 2 bf16/fp16)."""
    cuda = device == "cuda"
    tokens = shape.batch_size * shape.seq_len
    per_token = layer_forward(arch) + 3 * arch.hidden_size + 2 * arch.head_dim   # + final hidden and its norm
    factor = 1.0 if cuda else ACTIVATION_FACTOR["eval"]
    parts = {"weights": shape.models * arch.parameters * dtype_bytes,
             "activations": int(per_token * tokens * dtype_bytes * factor)}
    if shape.kind == "window":
        parts["loss"] = LOSS_BUFFERS["eval"] * loss_chunk_elements(arch, shape.batch_size, shape.seq_len,
                                                                   shape.chunk_size) * 4
    else:
        copies = 2 if shape.kind == "passkey" else 1
        parts["kv_cache"] = copies * 2 * arch.num_layers * arch.kv_dim * tokens * dtype_bytes
    return Estimate({**parts, "runtime": _runtime("eval", sum(parts.values()), cuda)})


def _runtime(kind: str, tensors: int, cuda: bool) -> int:
    if cuda:
        return int(CUDA_RUNTIME[kind] + (CUDA_SLACK - 1) * tensors)
    return CPU_RUNTIME[kind]


def estimate(config: Any, shape: TrainShape | EvalShape, device: str = "cpu", dtype_bytes: int = 4) -> Estimate:
    """The peak of one unit of work for the model of `config` (a transformers config, a model or a config.json
    dict) on `device`; `dtype_bytes` is the weights' size for an evaluation (training: see `train_estimate`)."""
    arch = config if isinstance(config, Architecture) else Architecture.from_config(config)
    device = str(device).split(":")[0]
    if isinstance(shape, TrainShape):
        return train_estimate(arch, shape, device)
    return eval_estimate(arch, shape, device, dtype_bytes)


# ------------------------------------------------------------------------------------ the device

def available_memory(device: str = "cpu") -> int | None:
    """Bytes the device can still give: free CUDA memory (`torch.cuda.mem_get_info`), or the system's MemAvailable
    (/proc/meminfo) for the CPU; None where neither can be read (a CPU without /proc: macOS, Windows)."""
    device = str(device)
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        return int(torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())[0])
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024   # kB
    return None


def check_fits(est: Estimate, device: str, what: str, knobs: str, force: bool = False) -> str | None:
    """Compare the estimate of the largest unit of work with what `device` has, before anything is allocated.

    Raises ValueError (one sentence: the estimate, what is available, the knobs that would make it fit) when it
    cannot fit; prints one warning line when it takes more than NARROW of it. `force` skips both. Returns the
    warning, or None.
    """
    available = None if force else available_memory(device)
    if available is None:
        return None
    name = "CPU RAM available" if not str(device).startswith("cuda") else f"free on {device}"
    if est.total > available:
        raise ValueError(f"not enough memory: {what} needs an estimated {gib(est.total)} ({est.describe()}) but "
                         f"{gib(available)} is {name}; to fit: {knobs}; `force` runs it anyway")
    if est.total > NARROW * available:
        warning = (f"warning: {what} needs an estimated {gib(est.total)} of the {gib(available)} {name} "
                   f"({est.total / available:.0%}); it may not fit")
        print(warning, file=sys.stderr, flush=True)
        return warning
    return None


def eval_knobs(shape: EvalShape) -> str:
    """What makes an evaluation unit smaller, as the fields that set it."""
    chunk = ", a smaller `chunk_size`" if shape.kind == "window" else ""
    return f"a shorter `lengths`, a smaller `batch_size`{chunk}, `dtype` bfloat16, or a device with more memory"


def train_knobs(shape: TrainShape) -> str:
    """What makes a training step smaller, as the fields that set it."""
    knobs = ["a shorter `seq_len` or a `pose_window`", "`lora_rank`" if shape.lora_rank is None else None,
             "a smaller `batch_size`" if shape.batch_size > 1 else None,
             "`gradient_checkpointing`" if not shape.gradient_checkpointing else None,
             "a smaller `loss_chunk_size`", "sequence parallelism over more GPUs (see ropescale plan --gpus)"]
    return ", ".join(k for k in knobs if k)


# ------------------------------------------------------------------------------------ plan: what fits

@dataclass(frozen=True)
class Option:
    """One way to spread a training step over the GPUs, and its estimate per GPU."""

    zero_stage: int
    sequence_parallel: int
    estimate: Estimate

    def fits(self, limit: int) -> bool:
        return self.estimate.total <= limit


def sequence_parallel_degrees(arch: Architecture, gpus: int) -> list[int]:
    """Degrees N of Ulysses that the run can use: N divides the GPUs and the attention heads (each GPU takes whole
    heads; KV heads fewer than N are replicated, as DeepSpeed does)."""
    return [n for n in range(1, gpus + 1) if gpus % n == 0 and arch.num_heads % n == 0]


def options(arch: Architecture, shape: TrainShape, device: str = "cuda") -> list[Option]:
    """Every (ZeRO stage, sequence-parallel degree) for the GPUs of `shape`, smallest degree first."""
    return [Option(stage, n, train_estimate(arch, replace(shape, zero_stage=stage, sequence_parallel=n), device))
            for n in sequence_parallel_degrees(arch, shape.gpus) for stage in ZERO_STAGES]


def smallest_fit(found: list[Option], limit: int) -> Option | None:
    """The option with the smallest sequence-parallel degree, then the lowest ZeRO stage, that fits `limit`
    (less communication first: Ulysses moves activations at every layer, ZeRO-3 gathers every weight)."""
    return next((o for o in found if o.fits(limit)), None)
