"""Does the memory planner predict what ropescale really allocates? Predicted vs measured peaks on CPU.

For each case (a model, a unit of work, a length) a fresh process imports torch, transformers, peft and ropescale,
resets its peak RSS to its resident set size (writing 5 to /proc/self/clear_refs), reads that RSS
(/proc/self/statm), builds the model, runs the unit, and reports its peak RSS (VmHWM of /proc/self/status).
Measured = peak RSS − the RSS before the model was built: what the model and the unit of work added to an
interpreter that had already imported everything. The peak is VmHWM, not `ru_maxrss`: at exec, Linux keeps the
high-water mark of the image being replaced in `ru_maxrss`, and Python's subprocess starts children with vfork,
whose replaced image is the parent's own, so a child's `ru_maxrss` is at least its parent's peak. Started from a
process that had peaked at 1.5 GiB, the tiny training step measured 1,165 MiB by `ru_maxrss` and 142 MiB by
VmHWM; this script's own peak (about 300 MiB) is below every case's, so the stored rows, taken with `ru_maxrss`,
are the same by either. The prediction is
`ropescale.memory_plan.estimate(...)`.total for the same model config and shape on CPU (fp32), which is what
`plan` prints and what the pre-flight check compares with the memory available.

Units, as ropescale runs them:
  train        one fine-tuning step as `ropescale.train.finetune` runs it on CPU: activation checkpointing,
               chunked loss (`training_loss`), fused AdamW, clip to 1.0, freed heap pages returned before the first
               optimizer step; two steps, so the second runs its forward and backward with AdamW's state allocated
  train-nockpt the same without activation checkpointing
  lora         the same with LoRA rank 8 on q,k,v,o and trainable embeddings and norms (`ropescale.train.lora`)
  perplexity   one perplexity window (`ropescale.evaluate.window_nll`, chunked logits, no gradients)
  prefill      one passkey trial batch (`ropescale.evaluate.decoding`: prefill with the KV cache, the answer's NLL
               from a copy of the cache, 8 greedy tokens)

Models: the embedded checkpoint; the benchmarks' random Llamas (hidden 512 × 4 layers × vocab 128256 of
eval_memory.py/finetune_step.py, hidden 1024 × 8 layers × vocab 32000 of throughput.py); a random Llama with
SmolLM2-135M's published shape (30 layers, 9 heads / 3 KV heads, tied embeddings); the tests' tiny Llama (hidden 64,
2 layers, vocabulary 4096).

    python benchmarks/memory_plan.py                  # measure every case (about an hour on 2 cores)
    python benchmarks/memory_plan.py --only embedded  # the cases of one model
    python benchmarks/memory_plan.py --case tiny train 2048 1   # one case (repeatable), replacing its row
    python benchmarks/memory_plan.py --table          # recompute predictions for the stored measurements
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# name -> how to build its config (hidden, layers, vocab, heads, kv heads, intermediate, tied) or "embedded"
MODELS = {
    "embedded": "embedded",
    "bench-512x4": dict(hidden=512, layers=4, vocab=128256, heads=8, kv_heads=8, intermediate=1344, tied=False),
    "bench-1024x8": dict(hidden=1024, layers=8, vocab=32000, heads=16, kv_heads=16, intermediate=2688, tied=False),
    "smollm2-shape": dict(hidden=576, layers=30, vocab=49152, heads=9, kv_heads=3, intermediate=1536, tied=True),
    # tests/conftest.py's tiny Llama with the embedded tokenizer's vocabulary
    "tiny": dict(hidden=64, layers=2, vocab=4096, heads=4, kv_heads=2, intermediate=128, tied=False),
}

K = 1024
CASES = [  # (model, unit, length, batch)
    *[("embedded", u, n, 1) for u in ("train", "lora", "perplexity", "prefill") for n in (K, 4 * K, 16 * K)],
    ("embedded", "train-nockpt", K, 1), ("embedded", "train-nockpt", 4 * K, 1),
    ("embedded", "train", 2 * K, 2), ("embedded", "prefill", 2 * K, 4), ("embedded", "perplexity", 4 * K, 4),
    *[("bench-512x4", u, n, 1) for u in ("train", "lora") for n in (K, 4 * K)],
    *[("bench-512x4", "perplexity", n, 1) for n in (K, 4 * K, 16 * K)],
    ("bench-512x4", "prefill", 4 * K, 1), ("bench-512x4", "prefill", 16 * K, 1),
    ("bench-1024x8", "train", K, 1), ("bench-1024x8", "train", 2 * K, 1), ("bench-1024x8", "lora", 2 * K, 1),
    ("bench-1024x8", "perplexity", 4 * K, 1), ("bench-1024x8", "prefill", 4 * K, 1),
    ("smollm2-shape", "train", K, 1), ("smollm2-shape", "lora", 2 * K, 1),
    ("smollm2-shape", "perplexity", 4 * K, 1), ("smollm2-shape", "prefill", 4 * K, 1),
    ("smollm2-shape", "prefill", 16 * K, 1),
    ("tiny", "train", 2 * K, 1), ("tiny", "lora", 2 * K, 1), ("tiny", "perplexity", 8 * K, 1),
]
LORA_RANK = 8


def model_config(name: str, length: int):
    """The transformers config of a case's model (no weights)."""
    from transformers import LlamaConfig

    from ropescale.models import load_config

    shape = MODELS[name]
    if shape == "embedded":
        return load_config(None)
    return LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       num_key_value_heads=shape["kv_heads"], head_dim=shape["hidden"] // shape["heads"],
                       max_position_embeddings=length, tie_word_embeddings=shape["tied"])


def rss_mib() -> float:
    """Resident set size of this process now, MiB."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Make the peak RSS of this process (VmHWM) its RSS now: "5" resets it, Linux >= 4.0 (proc(5), clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def _build(name: str, length: int):
    import torch
    from transformers import LlamaForCausalLM

    from ropescale.models import load_model

    if MODELS[name] == "embedded":
        return load_model(None)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM._from_config(model_config(name, length), attn_implementation="sdpa")
    return model.eval()


def _train(model, ids, unit: str) -> float:
    import torch

    from ropescale.train.lora import add_lora
    from ropescale.train.loop import training_loss
    from ropescale.train.memory import adamw, release_freed_memory

    model.config.use_cache = False
    if unit != "train-nockpt":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if unit == "lora":
        model = add_lora(model, LORA_RANK, None, ["q_proj", "k_proj", "v_proj", "o_proj"], ["embed", "norm"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    for step in range(2):
        loss = training_loss(model, ids)
        loss.backward()
        if step == 0:
            release_freed_memory()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _evaluate(model, ids, unit: str) -> float:
    import torch

    from ropescale.evaluate.decoding import answer_nll, greedy, prefill
    from ropescale.evaluate.perplexity import window_nll

    with torch.no_grad():
        if unit == "perplexity":
            total, n = window_nll(model, ids)
            return total / n
        state = prefill(model, ids[:, :-6])
        nll = answer_nll(model, state, ids[:, -6:])
        greedy(model, state, 8)
        return float(nll.mean())


def child(name: str, unit: str, length: int, batch: int) -> dict:
    import torch
    import transformers  # noqa: F401 - imported before the baseline, like everything the unit needs
    import peft  # noqa: F401

    import ropescale.evaluate  # noqa: F401
    import ropescale.train.loop  # noqa: F401

    reset_peak_rss()
    before = rss_mib()
    model = _build(name, length)
    loaded = rss_mib()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    value = _train(model, ids, unit) if unit in ("train", "train-nockpt", "lora") else _evaluate(model, ids, unit)
    peak = common.peak_rss_mib()  # VmHWM
    return {"model": name, "unit": unit, "length": length, "batch": batch, "seconds": time.perf_counter() - start,
            "rss_before_model_mib": before, "rss_after_model_mib": loaded, "peak_rss_mib": peak,
            "measured_mib": peak - before, "value": value}


def predict(row: dict) -> dict:
    """The planner's estimate for a measured row (CPU, fp32), MiB, and its breakdown."""
    from ropescale.memory_plan import EvalShape, TrainShape, estimate

    config = model_config(row["model"], row["length"])
    unit, n, b = row["unit"], row["length"], row["batch"]
    if unit in ("perplexity", "prefill"):
        shape = EvalShape(kind="window" if unit == "perplexity" else "passkey", seq_len=n, batch_size=b)
    else:
        shape = TrainShape(seq_len=n, batch_size=b, lora_rank=LORA_RANK if unit == "lora" else None,
                           gradient_checkpointing=unit != "train-nockpt")
    est = estimate(config, shape, device="cpu")
    return {"predicted_mib": est.total / 2**20, "parts_mib": {k: round(v / 2**20, 1) for k, v in est.parts.items()}}


def with_predictions(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if "measured_mib" in row:
            row = {**row, **predict(row)}
            row["ratio"] = row["predicted_mib"] / row["measured_mib"]
        out.append(row)
    return out


COLUMNS = ["model", "unit", "length", "batch", "predicted_mib", "measured_mib", "ratio", "seconds"]


def markdown(rows: list[dict]) -> str:
    """The table of benchmarks/README.md: predicted vs measured peak per case, and the ratio."""
    lines = ["| model | unit | L | batch | predicted MiB | measured MiB | predicted / measured |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "ratio" in r:
            lines.append(f"| {r['model']} | {r['unit']} | {r['length']} | {r['batch']} | {r['predicted_mib']:,.0f} | "
                         f"{r['measured_mib']:,.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="measure the cases of this model only (kept with the others)")
    parser.add_argument("--case", nargs=4, action="append", metavar=("MODEL", "UNIT", "LENGTH", "BATCH"),
                        help="measure this case only (repeatable), replacing its stored row")
    parser.add_argument("--table", action="store_true", help="recompute predictions for the stored measurements")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "UNIT", "LENGTH", "BATCH"))
    args = parser.parse_args()
    if args.child:
        name, unit, length, batch = args.child
        print(json.dumps(child(name, unit, int(length), int(batch))))
        return
    path = common.RESULTS / "memory_plan.json"
    stored = json.loads(path.read_text())["rows"] if path.is_file() else []
    if not args.table:
        cases = [(n, u, int(length), int(b)) for n, u, length, b in args.case] if args.case else CASES
        keep = [r for r in stored if (args.only is not None and r["model"] != args.only)
                or (args.case and (r["model"], r["unit"], r["length"], r["batch"]) not in cases)]
        for name, unit, length, batch in cases:
            if args.only is not None and name != args.only:
                continue
            row = common.run_child(Path(__file__), ["--child", name, unit, str(length), str(batch)], timeout=3600)
            keep.append({"model": name, "unit": unit, "length": length, "batch": batch, **row})
            print(json.dumps(keep[-1]), flush=True)
            common.write_result("memory_plan", {"rows": keep})
        stored = keep
    rows = with_predictions(stored)
    print(common.table(rows, COLUMNS))
    print(markdown(rows))
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    print(f"{len(ratios)} cases: predicted / measured from {min(ratios):.3f} to {max(ratios):.3f}")
    common.write_result("memory_plan", {"rows": rows, "lora_rank": LORA_RANK})


if __name__ == "__main__":
    main()
