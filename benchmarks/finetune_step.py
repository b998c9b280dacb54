"""Fine-tuning memory and time: one AdamW step at L = 4096, ropescale's defaults vs the plain transformers step.

Four ways, each in its own process, repeated:
  plain           model(input_ids, labels=...) + backward + torch.optim.AdamW: full logits, every activation kept
  plain+ckpt      the same with gradient checkpointing on (separates the savings)
  ckpt+chunked    gradient checkpointing + ropescale's loss from hidden states in chunks, plain AdamW
  ropescale       ropescale's training step as `finetune` runs it on CPU: the above + fused AdamW + freed
                  heap pages returned to the OS before the step (ropescale.train.memory)

    python benchmarks/finetune_step.py                     # L = 4096, 3 repetitions
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from eval_memory import MODEL  # noqa: E402

MODES = ["plain", "plain+ckpt", "ckpt+chunked", "ropescale"]


def child(mode: str, length: int) -> dict:
    import torch

    model = common.random_llama(**MODEL, max_positions=length).train()
    model.config.use_cache = False
    ids = torch.randint(0, MODEL["vocab"], (1, length), generator=torch.Generator().manual_seed(1))
    from ropescale.train.loop import training_loss   # imported before the clock starts, like transformers
    from ropescale.train.memory import adamw, release_freed_memory

    if mode == "ropescale":
        optimizer = adamw(model.parameters(), lr=1e-5)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if mode != "plain":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    ready = common.peak_rss_mib()
    start = time.perf_counter()
    if mode in ("ckpt+chunked", "ropescale"):
        loss = training_loss(model, ids)
    else:
        loss = model(ids, labels=ids).loss
    loss.backward()
    if mode == "ropescale":
        release_freed_memory()   # as finetune does before each optimizer step on CPU
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"mode": mode, "length": length, "seconds": time.perf_counter() - start,
            "peak_rss_mib": common.peak_rss_mib(), "rss_after_load_mib": ready, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.length)))
        return

    runs = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            runs[mode].append(common.run_child(Path(__file__), ["--child", mode, "--length", str(args.length)]))
    rows = []
    for mode, results in runs.items():
        ok = [r for r in results if "error" not in r]
        row = {"mode": mode, "raw": results}
        if ok:
            row.update(peak_mib=common.median([r["peak_rss_mib"] for r in ok]),
                       load_mib=common.median([r["rss_after_load_mib"] for r in ok]),
                       seconds=common.median([r["seconds"] for r in ok]), loss=ok[0]["loss"])
        else:
            row["error"] = results[0]["error"]
        rows.append(row)
    base = rows[0]
    for row in rows:
        if "peak_mib" in row and "peak_mib" in base:
            row["memory_vs_plain"] = row["peak_mib"] / base["peak_mib"]
            row["time_vs_plain"] = row["seconds"] / base["seconds"]
    print(common.table(rows, ["mode", "peak_mib", "memory_vs_plain", "seconds", "time_vs_plain", "loss"]))
    path = common.write_result("finetune_step", {"model": MODEL, "length": args.length, "repeats": args.repeats,
                                                 "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
