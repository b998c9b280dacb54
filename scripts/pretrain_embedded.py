"""Pretrain the embedded model: a small Llama at L0 = 256 on the training plays plus synthetic retrieval documents.

    python scripts/build_tokenizer.py                            # tokenizer -> src/ropescale/assets/model
    OMP_NUM_THREADS=2 python scripts/pretrain_embedded.py        # checkpoints in runs/embedded, final model
                                                                 # -> src/ropescale/assets/model

The defaults are the shipped run's: one run of 3600 steps on `PRETRAINING_MIX` (70.4 min on 2 cores; its command
and learning curve are in src/ropescale/assets/model/MODEL_CARD.md).

Every batch mixes two kinds of rows of L0 tokens:
- Shakespeare: <s> + L0 - 1 tokens from a random offset of the training stream (plays joined with </s>);
- synthetic (`--pk-share` of the rows): whole retrieval documents, prompt + answer + </s>, never split, topped up
  with Shakespeare to L0 tokens (`--pk-pack`: as many documents as fit first), from
  `ropescale.data.synthetic.training_document`: Landmark passkey prompts and RULER's needle and variable-tracking
  formats (the generators `ropescale eval passkey` and `eval ruler` use), with fillers of the training families
  only (Shakespeare lines, random words, "The <noun> is <adjective>." noise, shuffled sentences of the plays) and
  keys of the training half (`ropescale.data.fillers`); the evaluation's Landmark sentence, essays and held-out
  plays never appear. Lengths grow from `--pk-min-len` to L0 over the first `--curriculum` of the steps, then half
  are full length; depth uniform in [0, 1] with a tenth at each end.
Next-token loss on every token, the answer tokens of passkey documents weighted `--answer-weight` times (they are
6 of ~250 tokens, and the retrieval they need is the skill the model is shipped for). AdamW, linear warmup,
cosine decay to `--min-lr`, bf16 autocast.

Batch b of step s is drawn from random.Random(seed, s) alone, so a resumed run (`--resume`, from
<out>/checkpoint.pt, written every `--save-every` steps) sees exactly the batches of an uninterrupted one.
Every `--eval-every` steps it logs passkey accuracy on 32 fixed trials at L0 with Landmark's filler and 32 with
the bundled essays (both never trained on) and bpb on 16 held-out windows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

from measure_embedded import bits_per_byte, eval_rows, passkey_accuracy  # noqa: E402
from ropescale import embedded_model_path  # noqa: E402
from ropescale.data import embedded_corpus, passkey_trials, tokenize_documents  # noqa: E402
from ropescale.data.fillers import essay_sentences  # noqa: E402
from ropescale.data.passkey import training_depth  # noqa: E402
from ropescale.data.synthetic import PRETRAINING_MIX, parse_mix, training_document  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", type=Path, default=embedded_model_path())
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "embedded", help="checkpoints and log")
    p.add_argument("--export", type=Path, default=embedded_model_path(), help="final HF model directory")
    p.add_argument("--steps", type=int, default=3600)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--seq-len", type=int, default=256, help="L0")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--pk-share", type=float, default=0.6, help="fraction of rows that are passkey prompts")
    p.add_argument("--pk-min-len", type=int, default=112)
    p.add_argument("--pk-pack", action=argparse.BooleanOptionalAction, default=True,
                   help="fill each passkey row with as many whole passkey documents as fit")
    p.add_argument("--curriculum", type=float, default=0.3, help="fraction of steps to reach full length")
    p.add_argument("--answer-weight", type=float, default=10.0,
                   help="loss weight of the answer tokens of passkey documents (1 = plain next-token loss)")
    p.add_argument("--mix", type=mix_arg, default=PRETRAINING_MIX,
                   help="formats of the synthetic documents and their shares, e.g. passkey=0.3,vt=0.1 (default "
                        "ropescale.data.synthetic.PRETRAINING_MIX)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast (1.7x faster on a CPU with AVX512-BF16; weights stay fp32)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--time-limit", type=float, default=0, help="minutes; stop early (and export) past it")
    p.add_argument("--stop-at", type=int, default=0,
                   help="save a checkpoint and exit after this step, without exporting (for staged recipes)")
    return p.parse_args()


def mix_arg(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_model(args, tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=args.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config)


class Batches:
    """Deterministic batch of any step: the rows depend on (seed, step) only."""

    def __init__(self, args, tokenizer):
        self.args, self.tok = args, tokenizer
        plays = embedded_corpus("train")
        self.stream = [t for ids in tokenize_documents(tokenizer, plays) for t in (*ids, tokenizer.eos_token_id)]

    def lm_tokens(self, rng: random.Random, n: int) -> list[int]:
        start = rng.randrange(len(self.stream) - n)
        return self.stream[start : start + n]

    def passkey_row(self, rng: random.Random, step: int) -> tuple[list[int], list[int]]:
        """Whole synthetic documents (never split), topped up with Shakespeare to seq_len tokens, and the positions
        of their answer tokens. Half the documents are as long as the curriculum allows, half uniform from
        pk_min_len; with --pk-pack, further documents follow while pk_min_len tokens remain (more retrieval
        targets per row)."""
        a = self.args
        ramp = min(1.0, step / max(1, a.curriculum * a.steps))
        longest = round(a.pk_min_len + ramp * (a.seq_len - a.pk_min_len))
        row: list[int] = []
        answers: list[int] = []
        while a.seq_len - len(row) >= a.pk_min_len and (not row or a.pk_pack):
            cap = min(longest, a.seq_len - len(row))
            total = cap if rng.random() < 0.5 else rng.randint(a.pk_min_len, cap)
            doc = training_document(self.tok, rng, total, training_depth(rng), a.mix)
            # the answer tokens, not the EOS after them (every token is scored here; the answers weigh more)
            answers += [len(row) + i for i, is_answer in enumerate(doc.is_answer[:-1]) if is_answer]
            row += doc.ids
        return row + self.lm_tokens(rng, a.seq_len - len(row)), answers

    def __call__(self, step: int) -> tuple[torch.LongTensor, torch.Tensor]:
        """Token ids [batch, seq_len] and per-token loss weights [batch, seq_len] (answer tokens weigh more)."""
        a = self.args
        rng = random.Random(a.seed * 1_000_003 + step)
        n_pk = round(a.batch * a.pk_share)
        weights = torch.ones(a.batch, a.seq_len)
        rows = []
        for i in range(n_pk):
            row, answers = self.passkey_row(rng, step)
            rows.append(row)
            weights[i, answers] = a.answer_weight
        rows += [[self.tok.bos_token_id] + self.lm_tokens(rng, a.seq_len - 1) for _ in range(a.batch - n_pk)]
        return torch.tensor(rows, dtype=torch.long), weights


def weighted_loss(model, ids: torch.LongTensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, each target token weighted (weights[:, t] for the token at position t)."""
    logits = model(input_ids=ids).logits[:, :-1].float()  # [b, L-1, V]: predictions of tokens 1..L-1
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # [b, L-1]
    w = weights[:, 1:]
    return (nll * w).sum() / w.sum()


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def save_checkpoint(path: Path, model, optimizer, step: int, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "elapsed": elapsed}, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-save keeps the previous checkpoint


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build_model(args, tokenizer)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    start, elapsed = 0, 0.0
    ckpt = args.out / "checkpoint.pt"
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = state["step"], state["elapsed"]
        print(f"resumed from {ckpt} at step {start}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters; args: {vars(args)}", flush=True)

    batches = Batches(args, tokenizer)
    trials = passkey_trials(tokenizer, args.seq_len - 6, 32, seed=1234)  # Landmark's filler: never trained on
    essay_trials = passkey_trials(tokenizer, args.seq_len - 6, 32, seed=1235, filler=" ".join(essay_sentences()))
    held_out = eval_rows(tokenizer, args.seq_len)
    held_out = held_out[torch.linspace(0, len(held_out) - 1, 16).long()]  # [16, L0], spread over both plays
    log = open(args.out / "metrics.jsonl", "a")

    t_last = time.time()
    for step in range(start, args.steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        ids, weights = batches(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = weighted_loss(model, ids, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        now = time.time()
        elapsed += now - t_last
        t_last = now
        done = step + 1
        record = {"step": done, "loss": round(loss.item(), 4), "lr": lr_at(step, args),
                  "grad_norm": round(float(grad_norm), 3), "elapsed_s": round(elapsed, 1)}
        if done % args.eval_every == 0 or done == args.steps:
            record["passkey_acc"] = passkey_accuracy(model, trials)
            record["passkey_essays_acc"] = passkey_accuracy(model, essay_trials)
            record["heldout_bpb"] = round(bits_per_byte(model, tokenizer, held_out)["bpb"], 4)
            t_last = time.time()  # evaluation time is not training time
        if done % 10 == 0 or "passkey_acc" in record:
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
        if done % args.save_every == 0 or done == args.steps:
            save_checkpoint(ckpt, model, optimizer, done, elapsed)
        if done == args.stop_at:
            save_checkpoint(ckpt, model, optimizer, done, elapsed)
            print(f"stopped at step {done}; continue with --resume", flush=True)
            return
        if args.time_limit and elapsed > 60 * args.time_limit:
            print(f"time limit {args.time_limit} min reached at step {done}", flush=True)
            save_checkpoint(ckpt, model, optimizer, done, elapsed)
            break

    args.export.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.export)
    tokenizer.save_pretrained(args.export)
    print(f"saved {args.export} after {elapsed / 60:.1f} min of training", flush=True)


if __name__ == "__main__":
    main()
