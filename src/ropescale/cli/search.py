"""`ropescale search --factor S --output DIR`: evolutionary search of a longrope spec's per-pair factors.

    ropescale search --factor 8 --output search-x8 --generations 20 --fitness needle
    ropescale eval passkey --spec search-x8/best.json --lengths 2048

Every generation is written to DIR as it finishes; rerunning the same command continues a killed search and ends
as an uninterrupted one would (same seed), and a larger --generations searches on. DIR/best.json is the best spec
(a RopeSpec as JSON, what --spec reads); score.png and factors.png plot the search.
"""

from __future__ import annotations

import argparse

from ropescale.cli.args import finite_float
from ropescale.cli.common import add_force_argument, add_model_argument, on_interrupt, positive_int

HELP = "search longrope's per-pair factors (and attention scale) by evolution on training text; writes a spec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ropescale.search import FITNESSES

    add_model_argument(parser)
    parser.add_argument("--factor", type=finite_float, required=True, help="scale factor s = target length / L0")
    parser.add_argument("--output", required=True, help="folder for the generations, best.json and the plots")
    parser.add_argument("--generations", type=positive_int, default=10, help="generations (default: %(default)s)")
    parser.add_argument("--population", type=positive_int, default=None, help="candidates kept per generation "
                        "(default 16; LongRoPE used 64)")
    parser.add_argument("--fitness", choices=FITNESSES, default=None,
                        help="perplexity of training text, or needle: perplexity of the answer tokens of synthetic "
                        "retrieval documents with training fillers and keys (default: needle)")
    parser.add_argument("--length", type=positive_int, default=None, help="fitness length in tokens (default: L0 x "
                        "factor)")
    parser.add_argument("--samples", type=positive_int, default=None, help="windows or documents scored per "
                        "candidate (default 8)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the search and its documents (default 0)")
    parser.add_argument("--fixed-attention-scale", dest="fixed_attention_scale", type=finite_float, default=None,
                        help="fix the attention scale on cos and sin to X (default: searched in [1, 2])")
    parser.add_argument("--max-factor", dest="max_factor", type=finite_float, default=None,
                        help="largest per-pair factor (default: 2 x factor)")
    parser.add_argument("--data", default=None, help="training text for the fitness: 'embedded' (the training "
                        "plays; default), a .txt/.jsonl file, a folder, or hf:NAME (its train split)")
    parser.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None,
                        help="windows per forward pass (default 1)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    add_force_argument(parser)


SETTING_FLAGS = ("population", "fitness", "length", "samples", "seed", "fixed_attention_scale", "max_factor", "data",
                 "batch_size")


def draw(result, fitness: str) -> list:
    """score.png and factors.png in the search folder, from its files."""
    from ropescale.report.plots import search_factors_figure, search_score_figure
    from ropescale.search.evolution import scored_seeds

    seeds = {name: s.candidate for name, s in scored_seeds(result.output).items()}
    found = list(result.spec.long_factor)
    attention = {name: c.attention_factor for name, c in seeds.items()}
    attention["searched"] = result.spec.attention_factor
    return [search_score_figure(result.history, fitness, result.output / "score.png"),
            search_factors_figure(found, {name: list(c.long_factor) for name, c in seeds.items()},
                                  result.output / "factors.png", attention)]


def run(args: argparse.Namespace) -> int:
    from ropescale.models import resolve_device
    from ropescale.search import search
    from ropescale.search.evolution import scored_seeds

    settings = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    on_interrupt(args, lambda: f"every finished generation is in {args.output}; rerun the same command to continue")
    device = resolve_device(args.device)
    result = search(args.model, factor=args.factor, output=args.output, generations=args.generations, device=device,
                    force=args.force, **settings)
    plots = [str(p) for p in draw(result, args.fitness or "needle") if p is not None]
    last = result.history[-1]
    seeds = ", ".join(f"{name} {s.score:.4f}" for name, s in scored_seeds(result.output).items())
    print(f"search: {result.generations} generations in {args.output}; best score {result.score:.4f} (the seeds: "
          f"{seeds}), attention scale {result.spec.attention_factor:.4g}")
    print(f"best spec: {result.output / 'best.json'} (use it with --spec); plots: {', '.join(plots)}")
    print(f"last generation: median {last['median']:.4f}, {last['evaluations']} candidates in {last['seconds']:.0f} s")
    return 0
