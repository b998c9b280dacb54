"""Distance to the limit: forward throughput of a mid-size model as a fraction of the machine's matmul rate.

Both are measured in the same run, on the same threads:
  matmul rate  fp32 square matrix multiplies (n = 2048), FLOPs = 2 n^3 each, best of several
  forward      random Llama, hidden 1024, 8 layers, 16 heads, vocab 32000, one sequence of L = 2048 under
               no_grad with SDPA; the evaluation path (hidden states, then the output layer in chunks)
FLOP count of the forward (written out in the result):
  2 * T * P_matmul                       every weight matrix once per token (embedding lookup excluded)
  + n_layers * 2 * T^2 * d_model         causal attention: QK^T and AV, 2 T^2 d each, halved by the mask

    python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODEL = dict(hidden=1024, layers=8, vocab=32000)


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def forward_flops(model, tokens: int) -> dict:
    config = model.config
    matmul_params = sum(p.numel() for name, p in model.named_parameters()
                        if p.dim() == 2 and "embed_tokens" not in name)
    dense = 2 * tokens * matmul_params
    attention = config.num_hidden_layers * 2 * tokens**2 * config.hidden_size
    return {"matmul_params": matmul_params, "dense_flops": dense, "attention_flops": attention,
            "total_flops": dense + attention}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from ropescale.train.loss import causal_lm_loss

    model = common.random_llama(**MODEL, max_positions=args.length)
    ids = torch.randint(0, MODEL["vocab"], (1, args.length), generator=torch.Generator().manual_seed(0))
    flops = forward_flops(model, args.length)
    rate_before = matmul_rate()
    times = []
    with torch.no_grad():
        causal_lm_loss(model, ids[:, :256])  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            causal_lm_loss(model, ids)
            times.append(time.perf_counter() - start)
    rate_after = matmul_rate()
    rate = max(rate_before, rate_after)
    seconds = common.median(times)
    achieved = flops["total_flops"] / seconds
    row = {"length": args.length, "forward_s": seconds, "forward_gflops": achieved / 1e9,
           "matmul_gflops": rate / 1e9, "fraction_of_matmul": achieved / rate,
           "tokens_per_s": args.length / seconds}
    print(common.table([row], list(row)))
    path = common.write_result("throughput", {"model": MODEL, **flops, "times_s": times,
                                              "matmul_rate_before": rate_before, "matmul_rate_after": rate_after,
                                              "threads": torch.get_num_threads(), "row": row})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
