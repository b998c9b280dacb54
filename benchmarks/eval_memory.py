"""Evaluation memory and time: perplexity of one long window, ropescale vs `model(input_ids, labels=...)`.

Random Llama-style model: hidden 512, 4 layers, vocabulary 128256 (Llama 3's), fp32, SDPA attention.
Each measurement is its own process (peak RSS), repeated; medians and ratios are printed and written to
benchmarks/results/eval_memory.json.

    python benchmarks/eval_memory.py                       # L = 8192 and 16384, 3 repetitions
    python benchmarks/eval_memory.py --lengths 8192 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODEL = dict(hidden=512, layers=4, vocab=128256)


def child(mode: str, length: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = common.random_llama(**MODEL, max_positions=length)
    ids = torch.randint(0, MODEL["vocab"], (1, length), generator=torch.Generator().manual_seed(1))
    from ropescale.evaluate.perplexity import window_nll   # imported before the clock starts, like transformers

    ready = common.peak_rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        if mode == "naive":  # what the YaRN repo's perplexity script and most users run
            nll = model(ids, labels=ids).loss.item()
        else:
            total, n = window_nll(model, ids)
            nll = total / n
    return {"mode": mode, "length": length, "seconds": time.perf_counter() - start,
            "peak_rss_mib": common.peak_rss_mib(), "rss_after_load_mib": ready, "nll": nll}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="8192,16384")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["naive", "ropescale"])
    parser.add_argument("--length", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.length)))
        return

    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        runs = {"naive": [], "ropescale": []}
        for _ in range(args.repeats):
            for mode in runs:  # interleaved so that drift in machine load hits both sides alike
                runs[mode].append(common.run_child(Path(__file__), ["--child", mode, "--length", str(length)]))
        row = {"length": length}
        for mode, results in runs.items():
            ok = [r for r in results if "error" not in r]
            if not ok:
                row[f"{mode}_error"] = results[0]["error"]
                continue
            row[f"{mode}_peak_mib"] = common.median([r["peak_rss_mib"] for r in ok])
            row[f"{mode}_load_mib"] = common.median([r["rss_after_load_mib"] for r in ok])
            row[f"{mode}_s"] = common.median([r["seconds"] for r in ok])
            row[f"{mode}_nll"] = ok[0]["nll"]
            row[f"{mode}_raw"] = results
        if "naive_peak_mib" in row and "ropescale_peak_mib" in row:
            row["memory_ratio"] = row["ropescale_peak_mib"] / row["naive_peak_mib"]
            row["time_ratio"] = row["ropescale_s"] / row["naive_s"]
            row["nll_abs_diff"] = abs(row["ropescale_nll"] - row["naive_nll"])
        rows.append(row)
        print(common.table([row], ["length", "naive_peak_mib", "ropescale_peak_mib", "memory_ratio",
                                   "naive_s", "ropescale_s", "time_ratio", "nll_abs_diff"]), flush=True)
    path = common.write_result("eval_memory", {"model": MODEL, "repeats": args.repeats, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
