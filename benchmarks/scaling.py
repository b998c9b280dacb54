"""How evaluation cost grows with length: time and peak memory of ropescale's perplexity at L = 1K ... 16K.

Same random model as eval_memory.py (hidden 512, 4 layers, vocab 128256); each length in its own process.
Fits log(cost) = a + k log(L) by least squares and reports the exponents k; writes a log-log plot.

    python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

EVAL_SCRIPT = Path(__file__).resolve().parent / "eval_memory.py"


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]

    rows = []
    for length in lengths:
        runs = [common.run_child(EVAL_SCRIPT, ["--child", "ropescale", "--length", str(length)])
                for _ in range(args.repeats)]
        ok = [r for r in runs if "error" not in r]
        if not ok:
            rows.append({"length": length, "error": runs[0]["error"]})
            continue
        peak = common.median([r["peak_rss_mib"] for r in ok])
        load = common.median([r["rss_after_load_mib"] for r in ok])
        rows.append({"length": length, "seconds": common.median([r["seconds"] for r in ok]),
                     "peak_mib": peak, "load_mib": load, "working_mib": peak - load})
        print(common.table(rows[-1:], ["length", "seconds", "peak_mib", "working_mib"]), flush=True)
    good = [r for r in rows if "seconds" in r]
    xs = [r["length"] for r in good]
    # memory above what the loaded model already holds: that is what grows with length
    exponents = {"time": fit_exponent(xs, [r["seconds"] for r in good]),
                 "working_memory": fit_exponent(xs, [r["working_mib"] for r in good]),
                 "peak_memory": fit_exponent(xs, [r["peak_mib"] for r in good])}
    print("fitted exponents (cost ~ L^k):", {k: round(v, 3) for k, v in exponents.items()})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(6, 4))
    ax1.loglog(xs, [r["seconds"] for r in good], "o-", color="tab:blue", label=f"time (k={exponents['time']:.2f})")
    ax1.set_xlabel("sequence length (tokens)")
    ax1.set_ylabel("seconds", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.loglog(xs, [r["working_mib"] for r in good], "s--", color="tab:red",
               label=f"working memory (k={exponents['working_memory']:.2f})")
    ax2.set_ylabel("peak RSS above the loaded model (MiB)", color="tab:red")
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc="upper left")
    ax1.set_title("ropescale perplexity: cost against length (log-log)")
    fig.tight_layout()
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(common.RESULTS / "scaling.png", dpi=120)
    path = common.write_result("scaling", {"rows": rows, "exponents": exponents, "repeats": args.repeats})
    print(f"wrote {path} and {common.RESULTS / 'scaling.png'}")


if __name__ == "__main__":
    main()
