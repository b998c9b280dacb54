"""`finetune(config)`: fine-tune a rescaled RoPE model at the target length, on one CPU or many GPUs.

The recipe is YaRN's (Peng et al., ICLR 2024, §4.1; `jquesnelle/yarn` finetune.py): apply the scaled RoPE, then
train briefly (400 steps for Llama-2-7B at s=16) on text packed to the target length with AdamW(0.9, 0.95),
lr 2e-5, no weight decay, 20 warmup steps, gradient clipping, bf16 autocast, activation checkpointing and
FlashAttention 2. Optional: LoRA with trainable embeddings and norms (LongLoRA), PoSE windows (PoSE).

accelerate is the only engine: `python -m ropescale finetune` runs one process; `torchrun`/`accelerate launch`
run DDP (gloo on CPU, NCCL on GPU), and an accelerate FSDP or DeepSpeed config file needs no code change.
Every process computes the same packed rows and takes its own share of each global batch, so the result does
not depend on how many processes share the batch. With `sequence_parallel` N, each group of N consecutive
processes shares one share of rows, every process holding 1/N of each row's positions
(`ropescale.train.sequence_parallel`: DeepSpeed Ulysses through accelerate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

# accelerate and peft are heavy, but fine-tuning is what this module is for
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

import ropescale
from ropescale import models
from ropescale.data import load_texts, pack, tokenize_documents
from ropescale.data.synthetic import TRAINING_MIX, parse_mix, task_rows
from ropescale.data.pose import pose_batch_position_ids
from ropescale.export.hf import save_extended
from ropescale.io import write_json_atomic
from ropescale.memory_plan import Estimate, TrainShape, check_fits, estimate, train_knobs
from ropescale.model_info import SPEC_KNOBS, ModelInfo, build_spec, check_spec_fits
from ropescale.rope.spec import read_spec
from ropescale.patch import apply
from ropescale.rope import RopeSpec
from ropescale.train.checkpoint import (LossLog, TrainerState, check_run_dir, clear_output_dir,
                                        fingerprint_mismatch, read_state, save_checkpoint)
from ropescale.train.config import FinetuneConfig
from ropescale.train.loss import IGNORE_INDEX, row_nll, shift_labels
from ropescale.train.lora import add_lora, count_parameters, merge_lora
from ropescale.train.memory import adamw, peak_rss_bytes, release_freed_memory
from ropescale.train.schedule import make_scheduler
from ropescale.train.sequence_parallel import (Group, accelerator_kwargs, all_reduce,
                                               check_sequence_parallel, current_group,
                                               install_global_length, launched_world_size, shard_rows)


class CausalLMLoss(torch.nn.Module):
    """The language model plus its chunked loss, as one module, so that DDP/FSDP wrap the whole forward pass.

    `forward` returns (the sum over rows of each row's mean NLL over its scored tokens, in nats; the number of
    rows). Every row weighs the same whether it scores all its tokens (text) or a few (the answers of passkey
    documents), so the mean does not depend on how a global batch is split between processes and micro-batches.
    Full-vocabulary logits never exist for the whole sequence (`ropescale.train.loss.row_nll`).

    Under sequence parallelism the module sees a shard of each row: `count_sum` (set once the group exists) sums
    each row's scored tokens over the shards, so a shard returns its part of every row's mean, and the parts add
    up (DeepSpeed sums the shards' gradients) to the row's mean.
    """

    def __init__(self, lm: torch.nn.Module, chunk_size: int | None, sequence_parallel: bool = False):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size
        self.count_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
        if sequence_parallel:
            self.config = lm.config   # accelerate hands DeepSpeed's Ulysses setup the prepared module's config

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        kwargs = {}
        if position_ids is not None:
            # an explicit all-ones mask: without one, transformers (5.x, masking_utils.find_packed_sequence_indices)
            # reads every jump in position_ids as a new packed document and masks attention across it, which
            # would cut PoSE's skipped chunks off from each other
            kwargs = {"position_ids": position_ids, "attention_mask": torch.ones_like(input_ids)}
        nll, n = row_nll(self.lm, input_ids, labels, chunk_size=self.chunk_size, use_cache=False, **kwargs)
        if self.count_sum is not None:
            n = self.count_sum(n)
        return (nll / n.clamp(min=1)).sum(), torch.tensor(input_ids.shape[0], device=nll.device)


def training_loss(model, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                  chunk_size: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token loss of one micro-batch, as the training step computes it (chunked logits; activation
    checkpointing is whatever the model has enabled): the mean over rows of each row's mean over its scored
    tokens (`labels`, shifted; default every next token)."""
    loss, n_rows = CausalLMLoss(model, chunk_size)(input_ids, position_ids, labels)
    return loss / n_rows


# ---------------------------------------------------------------------------------------------- pure helpers

def sample_indices(step: int, micro: int, rank: int, world: int, batch_size: int, grad_accum: int) -> list[int]:
    """Global sample indices of one process's micro-batch. A step consumes samples [step·G, (step+1)·G),
    G = batch_size · grad_accum · world, whatever the split between processes and micro-steps."""
    global_batch = batch_size * grad_accum * world
    start = step * global_batch + (micro * world + rank) * batch_size
    return list(range(start, start + batch_size))


class RowOrder:
    """Sample index -> packed row: a fresh seeded permutation of the rows for every pass over the data."""

    def __init__(self, n_rows: int, seed: int):
        self.n_rows, self.seed, self._perms = n_rows, seed, {}

    def __call__(self, sample: int) -> int:
        epoch, i = divmod(sample, self.n_rows)
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._perms = {epoch: torch.randperm(self.n_rows, generator=generator)}   # one epoch kept
        return int(self._perms[epoch][i])


def clip_and_step(accelerator, params, optimizer, scheduler, max_grad_norm: float | None) -> float:
    """Clip the global gradient norm to `max_grad_norm` (skipped when None/0), step, zero the gradients.
    Returns the norm before clipping (nan when DeepSpeed, which clips and steps inside `backward`, did not
    measure it)."""
    limit = max_grad_norm if max_grad_norm else math.inf  # clipping to inf only measures the norm
    norm = accelerator.clip_grad_norm_(params, limit)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return math.nan if norm is None else float(norm)


class TrainingRows(NamedTuple):
    """Packed training data. ids [N, seq_len]; scored [N, seq_len] bool, True where a token is a training target
    (its prediction from the tokens before it counts in the loss), or None when every token is one."""

    ids: torch.LongTensor
    scored: torch.BoolTensor | None

    def batch(self, indices: list[int]) -> tuple[torch.LongTensor, torch.LongTensor | None]:
        """input_ids [B, seq_len] of these rows and their shifted labels (None: every next token)."""
        input_ids = self.ids[indices]
        if self.scored is None:
            return input_ids, None
        labels = shift_labels(input_ids)
        labels[:, :-1][~self.scored[indices][:, 1:]] = IGNORE_INDEX
        return input_ids, labels


def training_rows(config: FinetuneConfig, tokenizer, seq_len: int, needed_rows: int) -> TrainingRows:
    """Documents of `config.data`, tokenized in order until `needed_rows` rows of `seq_len` are filled (or the
    corpus ends), packed with EOS between documents and BOS at the start of every row when the tokenizer has one.

    With `passkey_share` > 0, exactly that fraction of the rows are synthetic retrieval documents instead
    (`ropescale.data.synthetic.task_rows`: passkey and RULER needle and tracing documents in the shares of
    `passkey_mix`, default TRAINING_MIX, fillers from the same texts, training keys, seeded by `seed`), after the
    text rows; `RowOrder` shuffles them. Only their answers are scored (completion-only loss, as instruction tuning
    does): the filler is noise to the language model, and the answer is the retrieval being taught.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, which packing puts between documents")
    docs = load_texts(config.data, text_field=config.text_field, split=config.data_split)
    share = config.passkey_share
    n_text = needed_rows - round(needed_rows * share)
    token_docs, n_tokens = [], 0
    for doc in docs:
        token_docs += tokenize_documents(tokenizer, [doc])
        n_tokens += len(token_docs[-1]) + 1
        if n_tokens >= n_text * seq_len:
            break
    try:
        rows = pack(token_docs, seq_len, tokenizer.eos_token_id, tokenizer.bos_token_id)
    except ValueError as exc:
        raise ValueError(f"data {config.data!r}: {exc}; use more text or a shorter `seq_len`/`pose_window`") from None
    if not share:
        return TrainingRows(rows, None)
    rows = rows[:n_text]
    n_passkey = max(1, round(len(rows) * share / (1 - share)))   # the same share when the text is short
    texts = [doc.text for doc in docs[: len(token_docs)]]
    mix = parse_mix(config.passkey_mix) if config.passkey_mix else TRAINING_MIX
    passkey, answers = task_rows(tokenizer, n_passkey, seq_len, texts, config.seed, min_len=seq_len // 8, mix=mix)
    return TrainingRows(torch.cat([rows, passkey]), torch.cat([torch.ones_like(rows, dtype=torch.bool), answers]))


def fingerprint(lm, spec, config: FinetuneConfig, seq_len: int, target_len: int) -> dict[str, Any]:
    """What must not change between a checkpoint and the run that resumes it."""
    volatile = {"dtype", "torch_dtype", "transformers_version", "use_cache", "architectures"}
    model_config = {f"config.{k}": v for k, v in lm.config.to_dict().items()
                    if not k.startswith("_") and k not in volatile}
    trainable = sorted((n, list(p.shape)) for n, p in lm.named_parameters() if p.requires_grad)
    return {**json.loads(json.dumps(model_config, default=str)),
            "rope": spec.to_hf() if spec is not None else None,
            "seq_len": seq_len, "target_len": target_len, "pose_window": config.pose_window,
            "lora_rank": config.lora_rank, "data": config.data, "seed": config.seed,
            **({"passkey_share": config.passkey_share, "passkey_scored": "answers+eos", "passkey_rows": "mixture"}
               if config.passkey_share else {}),
            **({"passkey_mix": config.passkey_mix} if config.passkey_mix else {}),
            "trainable_parameters": hashlib.sha256(json.dumps(trainable).encode()).hexdigest()[:16]}


def peak_memory_bytes(device: torch.device) -> int:
    """cuda max allocated on GPU, peak resident set size of this process on CPU (`memory.peak_rss_bytes`)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()


def _spec(config: FinetuneConfig, info: ModelInfo):
    """The spec the settings ask for (None: the model trains as saved); L0 from the settings when given."""
    if config.spec is not None:
        return check_spec_fits(info, read_spec(config.spec))
    if config.method is None:
        return None
    knobs = {name: getattr(config, name) for name in SPEC_KNOBS}
    return build_spec(info, config.method, 1.0 if config.factor is None else config.factor, **knobs,
                      original_max_position_embeddings=config.original_max_position_embeddings)


def _enable_checkpointing(lm) -> None:
    # non-reentrant: works under DDP and with frozen inputs (LoRA); transformers 5.x renamed the method
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _attn_implementation() -> str:
    cuda = torch.cuda.is_available()
    return "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"


def _check_tracker(name: str | None) -> None:
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
    if module and importlib.util.find_spec(module) is None and not (
            name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
        raise ValueError(f"`report_to` {name} needs the {module} package: pip install {module}")


def _versions() -> dict[str, str]:
    out = {"ropescale": ropescale.__version__}
    for pkg in ("torch", "transformers", "accelerate", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _saved_dtype(model_name) -> torch.dtype:
    config = models.read_config_dict(model_name)
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name), torch.float32)


def _scaled_model(config: FinetuneConfig):
    """The base model with the config's rope spec applied (spec None: trained as saved); returns (model, spec,
    target length)."""
    lm = models.load_model(config.model, attn_implementation=_attn_implementation())
    info = ModelInfo.from_config(lm)
    spec = _spec(config, info)
    if spec is not None:
        apply(lm, spec)
    return lm, spec, info.target_length(spec)


def _with_lora(lm, config: FinetuneConfig):
    if config.lora_rank is None:
        return lm
    return add_lora(lm, config.lora_rank, config.lora_alpha, config.lora_targets, config.lora_trainable)


def _gathered_weights(accelerator, model) -> dict[str, torch.Tensor] | None:
    """Whole weights of the trained model when they are sharded over processes (FSDP, DeepSpeed ZeRO), gathered
    on the main process by accelerate (`Accelerator.get_state_dict`, which every process must call; ZeRO-3 needs
    `stage3_gather_16bit_weights_on_model_save`). None otherwise: the main process already holds them."""
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    return accelerator.get_state_dict(model)


def _rebuilt(config: FinetuneConfig, state: dict[str, torch.Tensor]):
    """A fresh copy of the trained model (base, spec, LoRA adapters) holding the gathered `state` of the
    `CausalLMLoss` wrapper (keys "lm.*")."""
    lm = _with_lora(_scaled_model(config)[0], config)
    prefix = "lm."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    lm.load_state_dict(weights, strict=True)
    return lm


def _save_final(model, tokenizer, spec, output: Path, provenance: dict[str, Any]) -> None:
    """The final model as a native checkpoint in the run directory, through `ropescale.export.hf.save_extended`
    (both rope schemas, ropescale.json, README). save_extended replaces its whole target directory, so it writes
    into `DIR/.final` and the files then move up one by one, leaving loss.csv and checkpoints/ in place."""
    if spec is None:   # trained as saved: the spec the model already has
        spec = RopeSpec.from_hf(model.config)
    for stale in output.glob("..final.*"):   # save_extended temporaries (tmp-, old-) of a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    staged = save_extended(model, tokenizer, spec, output / ".final", overwrite=True, provenance=provenance)
    for item in staged.iterdir():
        os.replace(item, output / item.name)
    staged.rmdir()


# ---------------------------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What the stages share, built once by `setup`: the accelerator, the data and the prepared model."""

    config: FinetuneConfig
    output: Path
    accelerator: Any
    tokenizer: Any
    spec: Any                  # RopeSpec | None (None: trained with the rope the model was saved with)
    target_len: int
    seq_len: int
    rows: TrainingRows
    order: RowOrder
    lm: torch.nn.Module        # the language model (LoRA-wrapped when configured)
    model: torch.nn.Module     # CausalLMLoss(lm), prepared by accelerate
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    n_trainable: int
    n_total: int
    group: Group               # sequence-parallel group and data-parallel coordinates of this process
    resumed_from_step: int | None = None
    clock: Clock | None = None

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.config.grad_accum * self.group.dp_size

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad


@dataclass
class Clock:
    """Seconds of training over every invocation of a run: those before a resume, plus this one's."""

    before: float
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start


def finetune(config: FinetuneConfig, *, on_step: Callable[[int], None] | None = None, force: bool = False) -> Path:
    """Fine-tune `config.model` with `config.method` at the target length; returns the output directory, which
    holds the final checkpoint (loadable with plain transformers), training.json and loss.csv.

    Stages: `setup` (accelerator, model and spec, data, LoRA, optimiser) → `resume` (the last checkpoint, when
    asked) → `train` (the optimizer steps) → `save` (the final model and training.json). `on_step(step)` is called
    after every optimizer step (after its checkpoint is saved); tests use it to interrupt a run.

    Before anything is loaded or written, the step's peak memory is estimated for this device (`step_estimate`):
    ValueError when it cannot fit, one warning line when it fits narrowly; `force` skips that.
    """
    if not config.output:
        raise ValueError("`output` is required: the directory for the fine-tuned checkpoint and its logs")
    output = Path(config.output).expanduser()
    resume_from = check_run_dir(output, config.resume, config.overwrite)  # before any model is loaded
    _check_tracker(config.report_to)
    if not force:
        shape, est, device = step_estimate(config)
        check_fits(est, device, f"a training step of {shape.batch_size} x {shape.seq_len} tokens", train_knobs(shape))
    run = setup(config, output, fresh=resume_from is None)
    state = resume(run, resume_from)
    state = train(run, state, on_step)
    save(run, state)
    return output


def _launch_layout() -> tuple[int, int, int]:
    """(processes, processes on this machine, ZeRO stage) of the launch, from the variables torchrun and
    `accelerate launch` set; an FSDP launch shards like ZeRO-3."""
    env = os.environ
    world, local = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return world, local, int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0"))
    return world, local, 3 if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" else 0


def step_estimate(config: FinetuneConfig) -> tuple[TrainShape, Estimate, str]:
    """(shape, estimated peak, device) of one training step of `config`, read from the model's config alone. On a
    CPU the processes of this machine share its memory, so the estimate covers all of them."""
    model_config = models.load_config(config.model)
    info = ModelInfo.from_config(model_config)
    seq_len = config.pose_window or config.seq_len or info.target_length(_spec(config, info))
    world, local, zero = _launch_layout()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # a sequence-parallel degree the launch cannot hold is refused by setup's own check, with its reason
    sp = config.sequence_parallel if world % config.sequence_parallel == 0 else 1
    zero = zero or (2 if sp > 1 else 0)   # Ulysses runs on DeepSpeed: ZeRO-2 unless the launch says otherwise
    shape = TrainShape(seq_len=seq_len, batch_size=config.batch_size,
                       gradient_checkpointing=config.gradient_checkpointing, lora_rank=config.lora_rank,
                       loss_chunk_size=config.loss_chunk_size, gpus=world, zero_stage=zero, sequence_parallel=sp,
                       data_tokens=config.steps * config.batch_size * config.grad_accum * world // sp * seq_len)
    est = estimate(model_config, shape, device)
    if device == "cpu" and local > 1:
        est = Estimate({name: value * local for name, value in est.parts.items()})
    return shape, est, device


def setup(config: FinetuneConfig, output: Path, fresh: bool) -> Run:
    """The accelerator, the scaled model, the packed rows, LoRA and the optimiser, in the order that fixes the
    random numbers (seed, then model, then data, then LoRA's initialisation)."""
    accelerator = _accelerator(config, output)
    if accelerator.is_main_process and fresh:
        clear_output_dir(output)
    accelerator.wait_for_everyone()
    set_seed(config.seed)
    tokenizer = models.load_tokenizer(config.model)
    lm, spec, target_len = _scaled_model(config)
    if config.pose_window is not None and config.pose_window > target_len:
        raise ValueError(f"`pose_window` {config.pose_window} is longer than the target length {target_len}")
    seq_len = config.pose_window or config.seq_len or target_len
    global_batch = config.batch_size * config.grad_accum * accelerator.num_processes // config.sequence_parallel
    rows = training_rows(config, tokenizer, seq_len, config.steps * global_batch)
    lm = _trainable(lm, config)
    n_trainable, n_total = count_parameters(lm)
    if accelerator.is_main_process:
        print(f"trainable parameters: {n_trainable:,} of {n_total:,} ({100 * n_trainable / n_total:.2f}%)", flush=True)
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                      weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config.schedule, config.warmup_steps, config.steps)
    size = config.sequence_parallel
    loss_module = CausalLMLoss(lm, config.loss_chunk_size, sequence_parallel=size > 1)
    model, optimizer, scheduler = accelerator.prepare(loss_module, optimizer, scheduler)
    group = current_group(size, accelerator.process_index, accelerator.num_processes)   # built by prepare
    if size > 1:
        install_global_length(lm, all_reduce(group.group, "max"))
        loss_module.count_sum = all_reduce(group.group, "sum")
    return Run(config, output, accelerator, tokenizer, spec, target_len, seq_len, rows,
               RowOrder(len(rows.ids), config.seed), lm, model, optimizer, scheduler, params, n_trainable, n_total,
               group)


def _accelerator(config: FinetuneConfig, output: Path):
    """The Accelerator of the run: plain (DDP, or FSDP/DeepSpeed from `accelerate launch`'s config), or DeepSpeed
    Ulysses over `sequence_parallel` processes. Gradient accumulation is accelerate's: DeepSpeed steps inside
    `backward` and must know which micro-step is the last."""
    cuda = torch.cuda.is_available()
    size = config.sequence_parallel
    parallel = {}
    if size > 1:
        check_sequence_parallel(size, models.read_config_dict(config.model), launched_world_size())
        parallel = accelerator_kwargs(size, config.batch_size, config.grad_accum, config.max_grad_norm,
                                      _attn_implementation(), cuda)
    return Accelerator(
        cpu=not cuda and size == 1,            # accelerate runs DDP over gloo on CPUs only when told so
        mixed_precision="bf16" if cuda else "no",   # fp32 on CPU
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,   # the schedule counts optimizer steps, whatever the process count
        log_with=config.report_to, project_dir=str(output), **parallel)


def _trainable(lm, config: FinetuneConfig):
    """The model in training mode: no KV cache, activation checkpointing if asked, LoRA adapters if asked."""
    lm.config.use_cache = False
    if config.gradient_checkpointing:
        _enable_checkpointing(lm)
    lm = _with_lora(lm, config)
    lm.train()
    return lm


def resume(run: Run, checkpoint: Path | None) -> TrainerState:
    """The state to start from: step 0, or the checkpoint's (refused when it was written by a different run)."""
    state = TrainerState(step=0, samples_seen=0, tokens=0, elapsed_s=0.0, loss=float("nan"),
                         fingerprint=fingerprint(run.lm, run.spec, run.config, run.seq_len, run.target_len))
    if checkpoint is not None:
        saved = read_state(checkpoint)
        mismatch = fingerprint_mismatch(saved.fingerprint, state.fingerprint)
        if mismatch:
            raise ValueError(f"`resume`: checkpoint {str(checkpoint)!r} was written by a different run: {mismatch}; "
                             "resume with the same model and settings, or start a new `output`")
        try:
            run.accelerator.load_state(str(checkpoint))
        except (RuntimeError, KeyError, OSError) as exc:
            raise ValueError(f"`resume`: could not load checkpoint {str(checkpoint)!r} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        state, run.resumed_from_step = saved, saved.step
    if run.config.report_to:
        hparams = {k: v for k, v in run.config.to_dict().items() if isinstance(v, (int, float, str, bool))}
        run.accelerator.init_trackers("ropescale-finetune", config=hparams)
    return state


def train(run: Run, state: TrainerState, on_step: Callable[[int], None] | None) -> TrainerState:
    """The optimizer steps from `state.step` to the last: each logged (loss.csv, progress bar, trackers) and
    checkpointed every `save_every` steps. Returns the state after the last step."""
    config, accelerator = run.config, run.accelerator
    main = accelerator.is_main_process
    log = LossLog(run.output, run.resumed_from_step) if main else None
    bar = tqdm(total=config.steps, initial=state.step, disable=not main, desc="finetune", unit="step",
               dynamic_ncols=True)
    run.clock, start, tokens_at_start = Clock(state.elapsed_s), state.step, state.tokens
    try:
        for step in range(start, config.steps):
            loss_sum = _accumulate(run, step)
            lr = run.scheduler.get_last_lr()[0]
            if accelerator.device.type == "cpu" and step == start:
                release_freed_memory()   # before AdamW allocates its state on top of the gradients; later steps
                #                          reuse the freed blocks (trimming every step costs ~13 % on small models)
            grad_norm = clip_and_step(accelerator, run.params, run.optimizer, run.scheduler, config.max_grad_norm)
            total = accelerator.reduce(loss_sum, reduction="sum")   # summed row means of the global batch
            state = TrainerState(step=step + 1, samples_seen=(step + 1) * run.global_batch,
                                 tokens=state.tokens + run.global_batch * run.seq_len, elapsed_s=run.clock.elapsed(),
                                 loss=float(total) / run.global_batch, fingerprint=state.fingerprint)
            if main:
                _show_step(run, state, lr, grad_norm, log, bar, tokens_at_start)
            if config.report_to:
                accelerator.log({"loss": state.loss, "lr": lr, "grad_norm": grad_norm, "tokens": state.tokens},
                                step=state.step)
            if config.save_every and (state.step % config.save_every == 0 or state.step == config.steps):
                save_checkpoint(accelerator, run.output, state, config.keep_checkpoints)
            if on_step is not None:
                on_step(state.step)
    finally:   # a crash keeps every logged step on disk
        bar.close()
        if log is not None:
            log.close()
    return state


def _micro_batch(run: Run, step: int, micro: int):
    """(input_ids [B, seq_len], position_ids [B, seq_len] or None, labels or None) of this process's micro-batch,
    on its device; PoSE position ids skip over the target length. Under sequence parallelism, this process's
    shard of those rows ([B, seq_len'/N], global positions and labels; `shard_rows`)."""
    config, group, device = run.config, run.group, run.accelerator.device
    samples = sample_indices(step, micro, group.dp_rank, group.dp_size, config.batch_size, config.grad_accum)
    input_ids, labels = run.rows.batch([run.order(s) for s in samples])   # [B, seq_len]
    position_ids = None
    if config.pose_window is not None:
        seeds = [(config.seed << 40) + s for s in samples]
        position_ids = pose_batch_position_ids(run.seq_len, run.target_len, seeds, config.pose_chunks)
    if group.size > 1:
        labels = shift_labels(input_ids) if labels is None else labels   # shifted before the cut
        input_ids, position_ids, labels = shard_rows(input_ids, labels, position_ids, group.size, group.rank,
                                                     run.pad_id)
    return tuple(t.to(device) if t is not None else None for t in (input_ids, position_ids, labels))


def _accumulate(run: Run, step: int) -> torch.Tensor:
    """Forward and backward of every micro-batch of one optimizer step, gradients synchronised once (on the last;
    `accelerator.accumulate` counts the micro-steps); returns this process's summed row losses."""
    config, accelerator = run.config, run.accelerator
    loss_total = torch.zeros((), device=accelerator.device)
    for micro in range(config.grad_accum):
        input_ids, position_ids, labels = _micro_batch(run, step, micro)
        with accelerator.accumulate(run.model):
            loss_sum, _ = run.model(input_ids, position_ids, labels)
            # every process holds batch_size rows: the mean over the global batch once DDP averages (DeepSpeed
            # sums a sequence-parallel group's shards) and accelerate divides by grad_accum
            accelerator.backward(loss_sum / config.batch_size)
        loss_total += loss_sum.detach().float()
    return loss_total


def _show_step(run: Run, state: TrainerState, lr: float, grad_norm: float, log: LossLog, bar, tokens_at_start: int):
    """One row of loss.csv and the progress bar's numbers (main process)."""
    log.write({"step": state.step, "loss": f"{state.loss:.6f}", "lr": f"{lr:.6g}", "tokens": state.tokens,
               "elapsed_s": f"{state.elapsed_s:.3f}", "grad_norm": f"{grad_norm:.6g}"})
    rate = (state.tokens - tokens_at_start) / max(time.perf_counter() - run.clock.start, 1e-9)
    bar.set_postfix(loss=f"{state.loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}",
                    mem=f"{peak_memory_bytes(run.accelerator.device) / 2**30:.2f}GiB", refresh=False)
    bar.update(1)


def save(run: Run, state: TrainerState) -> None:
    """The final model (LoRA merged, in the base model's dtype) and training.json, written by the main process
    once every process has finished."""
    config, accelerator = run.config, run.accelerator
    accelerator.wait_for_everyone()
    elapsed = run.clock.elapsed()
    gathered = _gathered_weights(accelerator, run.model)   # a collective: every process takes part
    if accelerator.is_main_process:
        final = merge_lora(accelerator.unwrap_model(run.model).lm if gathered is None else _rebuilt(config, gathered))
        final.to(_saved_dtype(config.model))   # trained in fp32 (master weights); saved as the base was
        final.config.use_cache = True          # turned off for training only
        _save_final(final, run.tokenizer, run.spec, run.output, provenance={
            "source_model": config.model or "embedded", "finetuned": {"steps": config.steps, "tokens": state.tokens,
                                                                      "final_loss": state.loss}})
        write_json_atomic(run.output / "training.json", {
            "settings": config.to_dict(), "rope": run.spec.to_hf() if run.spec is not None else None,
            "target_length": run.target_len, "seq_len": run.seq_len, "steps": config.steps,
            "resumed_from_step": run.resumed_from_step, "tokens": state.tokens, "elapsed_s": round(elapsed, 3),
            "final_loss": state.loss, "trainable_parameters": run.n_trainable, "total_parameters": run.n_total,
            "processes": accelerator.num_processes, "global_batch_rows": run.global_batch,
            "packed_rows": len(run.rows.ids), "mixed_precision": accelerator.mixed_precision,
            "versions": _versions()}, sort_keys=True)
        print(f"saved {run.output} (final loss {state.loss:.4f}, {state.tokens:,} tokens, {elapsed:.1f} s)", flush=True)
    if config.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
