"""Markdown tables from benchmarks/results/*.json (what benchmarks/README.md shows).

    python benchmarks/summarize.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "—" if value is None else str(value)


def main() -> None:
    out = []
    first = next((load(n) for n in ["eval_memory", "finetune_step", "throughput", "scaling"] if load(n)), None)
    if first is None:
        sys.exit("no results yet: run `make bench`")
    m = first["machine"]
    out.append(f"Machine: {m['processor']}, {m['cpu_count']} cores, {m['memory_gib']} GiB; torch {m['torch']}, "
               f"transformers {m['transformers']}; {m['date']}.\n")

    if (r := load("eval_memory")):
        out.append(f"### 1. Evaluation: perplexity of one window (hidden 512, 4 layers, vocab 128256), "
                   f"median of {r['repeats']}\n")
        rows = [[row["length"], row.get("naive_peak_mib"), row.get("ropescale_peak_mib"), row.get("memory_ratio"),
                 row.get("naive_s"), row.get("ropescale_s"), row.get("time_ratio"), row.get("nll_abs_diff"),
                 row.get("naive_error", "")] for row in r["rows"]]
        out.append(md_table(["L", "naive peak MiB", "ropescale peak MiB", "memory ratio", "naive s", "ropescale s",
                             "time ratio", "|ΔNLL|", "naive error"], rows))
    if (r := load("finetune_step")):
        out.append(f"\n### 2. Fine-tuning: one AdamW step at L = {r['length']}, median of {r['repeats']}\n")
        rows = [[row["mode"], row.get("peak_mib"), row.get("memory_vs_plain"), row.get("seconds"),
                 row.get("time_vs_plain"), row.get("error", "")] for row in r["rows"]]
        out.append(md_table(["step", "peak MiB", "memory vs plain", "seconds", "time vs plain", "error"], rows))
    if (r := load("throughput")):
        row = r["row"]
        out.append(f"\n### 3. Distance to the limit: forward at L = {row['length']} (hidden 1024, 8 layers, "
                   f"vocab 32000), {r['threads']} threads\n")
        out.append(md_table(["forward FLOPs", "forward s", "forward GFLOP/s", "fp32 matmul GFLOP/s",
                             "fraction of matmul rate"],
                            [[f"{r['total_flops']:.3e}", row["forward_s"], row["forward_gflops"],
                              row["matmul_gflops"], row["fraction_of_matmul"]]]))
    if (r := load("scaling")):
        out.append("\n### 4. Cost against length (ropescale perplexity, one window)\n")
        rows = [[row["length"], row.get("seconds"), row.get("peak_mib"), row.get("working_mib")]
                for row in r["rows"]]
        out.append(md_table(["L", "seconds", "peak MiB", "peak above loaded model MiB"], rows))
        e = r["exponents"]
        out.append(f"\nFitted exponents (cost ∝ L^k): time k = {e['time']:.2f}, working memory "
                   f"k = {e['working_memory']:.2f}, peak memory k = {e['peak_memory']:.2f}. "
                   "Plot: `results/scaling.png`.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
