"""Shared pieces of the benchmarks: the random model, a child-process runner, machine facts, result files.

Every measurement that compares ropescale with the naive approach runs each side in its own fresh Python
process (peak RSS is per process and never goes down), several times, and reports medians and the ratio.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def random_llama(hidden: int, layers: int, vocab: int, heads: int | None = None, seed: int = 0,
                 max_positions: int = 4096):
    """A randomly initialised Llama of the given size (head_dim 64), fp32, eval mode, SDPA attention."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = heads or hidden // 64
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=False,
                         attn_implementation="sdpa")
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    return model.eval()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (`ropescale.train.memory.peak_rss_bytes`: VmHWM, not the
    ru_maxrss that a subprocess inherits from its parent)."""
    from ropescale.train.memory import peak_rss_bytes

    return peak_rss_bytes() / 2**20


def run_child(script: Path, args: list[str], timeout: float = 1800) -> dict:
    """Run `script args` in a fresh process; it prints one JSON object on its last stdout line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict:
    import torch
    import transformers

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def write_result(name: str, payload: dict) -> Path:
    """benchmarks/results/NAME.json, written atomically, with the machine facts."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    """Plain aligned text table."""
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in cells)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)
