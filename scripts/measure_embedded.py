"""Measure the embedded model on the held-out plays: bits per byte at L0 and 8·L0, passkey accuracy at L0.

    OMP_NUM_THREADS=2 python scripts/measure_embedded.py            # prints and writes measurements.json

Bits per byte (bpb). The held-out plays (EVAL_PLAYS) are tokenized without special tokens, joined with EOS after
each, and cut into non-overlapping rows of `length` tokens, each row being <s> followed by length - 1 stream
tokens (`ropescale.data.pack` with bos_id). In every row the model scores the length - 1 tokens after <s>, each
given everything before it in the row. bpb = (sum of their NLL in nats) / ln 2 / (number of UTF-8 bytes of
those scored tokens decoded with special tokens skipped). The ragged tail of the stream is not scored, so the
2048 rows cover slightly less text than the 256 rows. bpb does not depend on the tokenizer, so it compares with
character-level numbers (the same text, more bits per byte = worse).

Passkey at length L: `passkey_trials(tokenizer, L - len(answer), n)` (Landmark filler, keys 10000-99999 from a
fixed seed, depths evenly spread over [0, 1]), so prompt + answer fill exactly L positions; a trial is correct when
greedy decoding of len(answer) tokens reproduces " " + key exactly. Greedy exact match equals "the argmax at
every answer position, fed the correct prefix, is the answer token", which is how it is computed here: one
forward pass per batch of trials.

Passkey by filler family: the same at L0 with each evaluation filler of `ropescale.data.fillers.EVAL_FAMILIES`
(Landmark's sentences and the bundled essays, kinds no training document holds; held-out lines and held-out random
words, training kinds made of held-out text), keys from the evaluation half (`fillers.key_split`).

RULER at L0: `ropescale eval ruler` on the tasks that fit 256 tokens, `--ruler-samples` each; outputs in
ruler.samples.jsonl beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ropescale import embedded_model_path  # noqa: E402
from ropescale.data import embedded_corpus, pack, tokenize_documents  # noqa: E402
from ropescale.data.fillers import EVAL_FAMILIES, UNSEEN_FAMILIES, draw_filler, draw_key  # noqa: E402
from ropescale.data.passkey import PasskeyPrompt, passkey_prompt, passkey_trials, random_key  # noqa: E402


@torch.no_grad()
def bits_per_byte(model, tokenizer, rows: torch.LongTensor, batch: int = 8) -> dict:
    """bpb of rows [n, L] (each starting with <s>), scoring positions 1..L-1; see the module docstring."""
    model.eval()
    nats, n_bytes, n_tokens = 0.0, 0, 0
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]  # [b, L]
        logits = model(input_ids=chunk).logits[:, :-1].float()  # [b, L-1, V]
        nats += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
        n_tokens += chunk[:, 1:].numel()
        n_bytes += sum(len(tokenizer.decode(r[1:], skip_special_tokens=True).encode("utf-8")) for r in chunk)
    return {
        "bpb": nats / math.log(2) / n_bytes,
        "nats_per_token": nats / n_tokens,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "rows": len(rows),
    }


@torch.no_grad()
def passkey_accuracy(model, trials: list[PasskeyPrompt], batch: int = 16) -> float:
    """Fraction of trials whose answer greedy decoding reproduces exactly (teacher-forced argmax check)."""
    model.eval()
    correct = 0
    for i in range(0, len(trials), batch):
        group = trials[i : i + batch]
        ids = torch.tensor([t.prompt_ids + t.answer_ids for t in group])  # [b, P + A]; equal lengths
        n_answer = len(group[0].answer_ids)
        logits = model(input_ids=ids).logits[:, -n_answer - 1 : -1]  # [b, A, V]: predictions of the answer
        hits = (logits.argmax(-1) == ids[:, -n_answer:]).all(dim=-1)  # [b]
        correct += int(hits.sum())
    return correct / len(trials)


def eval_rows(tokenizer, length: int) -> torch.LongTensor:
    docs = tokenize_documents(tokenizer, embedded_corpus("eval"))
    return pack(docs, length, tokenizer.eos_token_id, tokenizer.bos_token_id)


def family_trials(tokenizer, length: int, n: int, seed: int, family: str) -> list[PasskeyPrompt]:
    """n trials at one length with a filler of `family` (drawn once from the seed), evaluation keys, depths evenly
    spread over [0, 1]."""
    rng = random.Random(f"measure:{seed}:{family}")
    filler = " ".join(draw_filler(family, rng))
    return [passkey_prompt(tokenizer, length, i / (n - 1), draw_key(rng, random_key, "eval"), filler)
            for i in range(n)]


def ruler_at(model, tokenizer, length: int, samples: int, out_dir: Path) -> dict:
    """RULER scores at one length (the tasks that fit), through `ropescale eval ruler`'s task."""
    from ropescale.evaluate import RulerTask, evaluate

    out = out_dir / "ruler.jsonl"
    out.unlink(missing_ok=True)
    task = RulerTask(lengths=[length], samples=samples)
    rows = evaluate(task, model, tokenizer=tokenizer, output=out, samples=out_dir / "ruler.samples.jsonl",
                    progress=False)
    out.unlink()
    return {r.metric: round(r.value, 4) for r in rows if r.n > 0} | {"samples": samples}


def measure(model_dir: Path, l0: int, n_passkey: int, seed: int, ruler_samples: int, out_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    answer_len = len(passkey_trials(tokenizer, l0, 1)[0].answer_ids)
    shown = model_dir.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown  # no machine paths in the JSON
    result = {"model": str(shown), "L0": l0, "eval_plays": [d.name for d in embedded_corpus("eval")]}
    t0 = time.time()
    result["bpb_L0"] = bits_per_byte(model, tokenizer, eval_rows(tokenizer, l0))
    print(f"bpb at L0 = {l0}: {result['bpb_L0']['bpb']:.4f}", flush=True)
    trials = passkey_trials(tokenizer, l0 - answer_len, n_passkey, seed=seed)
    result["passkey_L0"] = {"accuracy": passkey_accuracy(model, trials), "trials": n_passkey, "seed": seed}
    print(f"passkey at L0 = {l0} ({n_passkey} trials): {result['passkey_L0']['accuracy']:.1%}", flush=True)
    result["passkey_L0_by_filler"] = {}
    for family in EVAL_FAMILIES:
        acc = passkey_accuracy(model, family_trials(tokenizer, l0 - answer_len, n_passkey, seed, family))
        result["passkey_L0_by_filler"][family] = {"accuracy": acc, "trials": n_passkey, "unseen_kind":
                                                  family in UNSEEN_FAMILIES}
        print(f"passkey at L0, {family} filler ({n_passkey} trials, evaluation keys): {acc:.1%}", flush=True)
    result["ruler_L0"] = ruler_at(model, tokenizer, l0, ruler_samples, out_dir)
    print(f"RULER at L0: {result['ruler_L0']}", flush=True)
    result["bpb_8L0"] = bits_per_byte(model, tokenizer, eval_rows(tokenizer, 8 * l0), batch=2)
    print(f"bpb at 8·L0 = {8 * l0} (no scaling): {result['bpb_8L0']['bpb']:.4f}", flush=True)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=embedded_model_path())
    parser.add_argument("--l0", type=int, default=256)
    parser.add_argument("--passkey-trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the passkey keys")
    parser.add_argument("--ruler-samples", type=int, default=50, help="RULER samples per task at L0")
    parser.add_argument("--json", type=Path, default=None, help="default: <model>/measurements.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    out = args.json or args.model / "measurements.json"
    result = measure(args.model, args.l0, args.passkey_trials, args.seed, args.ruler_samples, out.parent)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
