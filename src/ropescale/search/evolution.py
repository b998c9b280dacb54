"""`search()`: LongRoPE's evolutionary search of per-pair rescale factors, resumable generation by generation.

Generation 0 is the seeds (PI, NTK, YaRN) and mutations of them, `population` candidates in all. Each later
generation keeps the best `parents` of the population, adds `mutations` mutated parents and `crossovers` children
of two parents, and the best `population` of old and new form the next population (LongRoPE's
`evolution/algorithms/genetic_base.py`; its shipped settings are population 64, 40 iterations, 16 mutations, 16
crossovers, 32 parents). A candidate is scored once: a repeat is never evaluated again.

Every random choice of generation g comes from a generator seeded with (seed, g), and everything generation g
needs is in the files of generations < g, so a killed search rerun with the same settings continues and ends with
exactly the candidates and scores of an uninterrupted run.

Files in the output folder (each written atomically):
    search.json           the settings and the model facts; a rerun with other settings is refused
    generation-NNNN.json  that generation's population (best first) and the children it evaluated, with scores
    best.json             the best candidate so far as a RopeSpec record (`ropescale eval --spec best.json`)
    history.csv           generation, best, median and worst score, evaluations, seconds
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ropescale.io import write_csv_atomic, write_json_atomic
from ropescale.models import resolve_device
from ropescale.search.fitness import FITNESSES
from ropescale.search.space import Candidate, Space, crossover, mutate, seeds, to_spec

SETTINGS_FILE, BEST_FILE, HISTORY_FILE = "search.json", "best.json", "history.csv"
MAX_TRIES = 50  # attempts at a child not evaluated before, per child


@dataclass(frozen=True)
class SearchSettings:
    """What fixes a search's result (all but `generations`, which a rerun may raise to search longer).

    factor: the scale s; length: the fitness length (default L0·s); samples: windows or documents scored;
    population/parents/mutations/crossovers: LongRoPE's knobs (defaults: a quarter of the population each for
    mutations and crossovers, half of it as parents); max_factor: the largest factor (default 2·s);
    fixed_attention_scale: the attention scale, fixed (None: searched in [1, 2]).
    """

    factor: float
    fitness: str = "needle"
    length: int | None = None
    samples: int = 8
    population: int = 16
    parents: int | None = None
    mutations: int | None = None
    crossovers: int | None = None
    max_factor: float | None = None
    fixed_attention_scale: float | None = None
    seed: int = 0
    data: str = "embedded"
    text_field: str = "text"
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"`factor` must be a number > 1 (the scale s), got {self.factor!r}")
        if self.fitness not in FITNESSES:
            raise ValueError(f"`fitness` must be one of {', '.join(FITNESSES)}, got {self.fitness!r}")
        for name in ("samples", "batch_size"):
            _positive(name, getattr(self, name))
        if not (isinstance(self.population, int) and self.population >= 4):
            raise ValueError(f"`population` must be an integer >= 4, got {self.population!r}")
        quarter, half = max(1, self.population // 4), max(2, self.population // 2)
        for name, default in (("parents", half), ("mutations", quarter), ("crossovers", quarter)):
            object.__setattr__(self, name, default if getattr(self, name) is None else getattr(self, name))
            _positive(name, getattr(self, name))
        if not 2 <= self.parents <= self.population:
            raise ValueError(f"`parents` must lie in [2, population] = [2, {self.population}], got {self.parents}")
        object.__setattr__(self, "max_factor", float(self.max_factor or 2 * self.factor))
        if self.max_factor < self.factor:
            raise ValueError(f"`max_factor` ({self.max_factor:g}) must be >= `factor` ({self.factor:g}): "
                             "the seeds (PI divides every pair by s) must lie in the space")
        if self.length is not None:
            _positive("length", self.length)
        if self.fixed_attention_scale is not None:
            Space(1, self.max_factor, self.fixed_attention_scale)  # its checks, before any model is loaded
        object.__setattr__(self, "factor", float(self.factor))

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(name: str, value) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


@dataclass
class Scored:
    """A candidate and its score (mean NLL, nats per scored token; lower is better)."""

    candidate: Candidate
    score: float

    def record(self) -> dict[str, Any]:
        return {**self.candidate.record(), "score": self.score}

    @classmethod
    def from_record(cls, record: dict) -> Scored:
        return cls(Candidate.from_record(record), float(record["score"]))


def ranked(scored: list[Scored]) -> list[Scored]:
    """Best first; ties broken by the candidate itself so that the order never depends on arrival."""
    return sorted(scored, key=lambda s: (s.score, s.candidate.key))


def rng_of(seed: int, generation: int) -> np.random.Generator:
    return np.random.default_rng([seed, generation])


def generation_path(output: Path, generation: int) -> Path:
    return output / f"generation-{generation:04d}.json"


# ---------------------------------------------------------------- the state on disk


@dataclass
class State:
    """What the finished generations hold: the current population (best first), every candidate scored so far,
    and one history row per generation."""

    generation: int = -1   # the last finished generation (-1: none)
    population: list[Scored] = dataclasses.field(default_factory=list)
    seen: dict[tuple, float] = dataclasses.field(default_factory=dict)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"`output`: {str(path)!r} cannot be read ({exc}); delete it to redo that part") from None


def load_state(output: Path) -> State:
    """The finished generations in `output`, in order (a generation's file is whole or absent: atomic writes)."""
    state = State()
    while generation_path(output, state.generation + 1).is_file():
        record = read_json(generation_path(output, state.generation + 1))
        for item in record["children"]:
            scored = Scored.from_record(item)
            state.seen[scored.candidate.key] = scored.score
        state.population = [Scored.from_record(item) for item in record["population"]]
        state.history.append(record["summary"])
        state.generation += 1
    return state


def check_settings(output: Path, header: dict[str, Any]) -> None:
    """In a folder that holds a search, it must be this search (the model named None or "embedded" alike)."""
    path = output / SETTINGS_FILE
    if not path.is_file():
        if any(output.glob("generation-*.json")):
            raise ValueError(f"`output` {str(output)!r} holds generation files but no {SETTINGS_FILE}; use an "
                             "empty folder")
        return
    saved = read_json(path)
    if saved.get("model") == "embedded":
        saved = {**saved, "model": None}
    for key in sorted(set(saved) | set(header)):
        if saved.get(key) != header.get(key):
            raise ValueError(f"`output` {str(output)!r} holds a search with other settings ({key}: "
                             f"{saved.get(key)!r} there, {header.get(key)!r} now); rerun it with the same "
                             "settings to continue it, or give another folder")


def write_generation(output: Path, generation: int, state: State, children: list[Scored], seconds: float,
                     base, head_dim: int, factor: float) -> None:
    """generation-NNNN.json, then best.json and history.csv (the generation file is the one resume reads)."""
    scores = [s.score for s in state.population]
    summary = {"generation": generation, "best": scores[0], "median": float(np.median(scores)),
               "worst": scores[-1], "evaluations": len(children), "seconds": round(seconds, 3)}
    write_json_atomic(generation_path(output, generation), {
        "generation": generation, "summary": summary,
        "population": [s.record() for s in state.population], "children": [s.record() for s in children]})
    state.history.append(summary)
    write_json_atomic(output / BEST_FILE, to_spec(state.population[0].candidate, base, factor).record())
    columns = list(summary)
    write_csv_atomic(output / HISTORY_FILE, [columns] + [[row[c] for c in columns] for row in state.history])


# ---------------------------------------------------------------- one generation


def _unique(make: Callable[[], Candidate], taken: set) -> Candidate | None:
    for _ in range(MAX_TRIES):
        child = make()
        if child.key not in taken:
            taken.add(child.key)
            return child
    return None


def propose(generation: int, state: State, settings: SearchSettings, space: Space,
            seed_candidates: list[Candidate]) -> list[Candidate]:
    """The candidates generation `generation` evaluates: none scored before, none twice."""
    rng = rng_of(settings.seed, generation)
    taken = set(state.seen)
    if generation == 0:  # the seeds, then mutations of them up to the population size
        children = list({c.key: c for c in seed_candidates if c.key not in taken}.values())
        taken.update(c.key for c in children)
        makers = [lambda: mutate(seed_candidates[rng.integers(len(seed_candidates))], space, rng)] * (
            settings.population - len(children))
    else:
        parents = [s.candidate for s in state.population[: settings.parents]]

        def pair() -> Candidate:
            i, j = rng.choice(len(parents), size=2, replace=False)
            return crossover(parents[i], parents[j], space, rng)

        children = []
        makers = ([lambda: mutate(parents[rng.integers(len(parents))], space, rng)] * settings.mutations
                  + [pair] * settings.crossovers)
    for make in makers:
        child = _unique(make, taken)
        if child is not None:
            children.append(child)
    return children


def next_population(state: State, children: list[Scored], size: int) -> list[Scored]:
    """The best `size` of the current population and the newly scored children."""
    return ranked(state.population + children)[:size]


# ---------------------------------------------------------------- the search


@dataclass(frozen=True)
class SearchResult:
    """The best spec found, its score, the generations finished and where the files are."""

    spec: Any  # RopeSpec (longrope)
    score: float
    generations: int
    output: Path
    history: list[dict[str, Any]]


@dataclass
class Problem:
    """A loaded search: the model, its plain rope, the fitness data and the space."""

    model: Any
    base: Any  # RopeSpec of the model's rope (θ, L0, partial rotary)
    head_dim: int
    data: Any  # FitnessData
    space: Space
    header: dict[str, Any]


def setup(model_name, settings: SearchSettings, device: str | None, output: Path, force: bool = False) -> Problem:
    """Read the model's config, check `output` against these settings (search.json) and that one scoring pass
    fits in memory (`check_memory`), then load the model and tokenizer and build the fitness data and the space."""
    from ropescale import models
    from ropescale.model_info import ModelInfo
    from ropescale.search.fitness import fitness_data

    config = models.load_config(model_name)
    info = ModelInfo.from_config(config)
    base = dataclasses.replace(info.rope, original_max_position_embeddings=info.original_max_position_embeddings)
    length = settings.length or int(round(info.original_max_position_embeddings * settings.factor))
    if length <= info.original_max_position_embeddings:
        raise ValueError(f"`length` {length} must exceed the model's L0 = {info.original_max_position_embeddings}: "
                         "longrope uses the searched factors only beyond L0")
    embedded = model_name is None or model_name == "embedded"
    header = {"model": None if embedded else str(model_name), **settings.record(), "length": length,
              "head_dim": info.head_dim, "rope": base.record()}
    if not force:
        check_memory(config, length, settings.batch_size, device)
    check_settings(output, header)
    tokenizer = models.load_tokenizer(model_name)
    data = fitness_data(settings.fitness, tokenizer, length, settings.samples, settings.seed, settings.data,
                        settings.text_field)
    model = models.load_model(model_name, device=device)
    space = Space(info.rotary_dim // 2, settings.max_factor, settings.fixed_attention_scale)
    if not (output / SETTINGS_FILE).is_file():   # only now: a call that failed above leaves the folder free
        write_json_atomic(output / SETTINGS_FILE, header)
    return Problem(model, base, info.head_dim, data, space, header)


def check_memory(config, length: int, batch_size: int, device: str | None = None) -> None:
    """ValueError naming the estimate, the memory available and the knobs when one scoring pass (`batch_size`
    windows of `length` tokens, the perplexity task's unit of work) cannot fit on `device` (default cpu); one
    warning line when it fits narrowly (`memory_plan.check_fits`)."""
    from ropescale.memory_plan import EvalShape, check_fits, estimate

    device = str(device or "cpu")
    check_fits(estimate(config, EvalShape("window", length, batch_size), device), device,
               f"scoring {batch_size} x {length} tokens",
               "a smaller `factor` or a shorter `length`, a smaller `batch_size`, or a device with more memory")


def search(model=None, *, factor: float, output: str | Path, generations: int = 10, device: str | None = None,
           progress: bool = True, on_generation: Callable[[int, State], None] | None = None, force: bool = False,
           **settings) -> SearchResult:
    """Search the longrope `long_factor` (and attention scale) of `model` at `factor`; see the module docstring.

    model: a name (None/"embedded", a directory, a Hub id). settings: `SearchSettings` fields (fitness, length,
    samples, population, seed, fixed_attention_scale...). Generations already in `output` are not redone; a
    rerun with more `generations` searches on. on_generation(g, state) runs after generation g is written.
    Raises ValueError naming the field for a bad setting, when `output` holds a search with other settings, or
    when one scoring pass cannot fit in memory (`force` skips that check).
    """
    from ropescale.search.fitness import score

    _positive("generations", generations)
    if device is not None:
        device = resolve_device(device)
    config = SearchSettings(factor=factor, **settings)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"`output` {str(output)!r} is a file; give a folder")
    problem = setup(model, config, device, output, force)
    state = load_state(output)
    seed_candidates = seeds(problem.base, problem.head_dim, config.factor, problem.space)
    todo = range(state.generation + 1, generations)
    total = sum(config.population if g == 0 else config.mutations + config.crossovers for g in todo)
    bar = tqdm(total=total, desc=f"search {config.fitness} ×{config.factor:g}", unit="candidate",
               disable=not progress)
    if state.population:
        bar.set_postfix(generation=state.generation, best=f"{state.population[0].score:.4f}")
    for generation in todo:
        start = time.perf_counter()
        children = []
        for candidate in propose(generation, state, config, problem.space, seed_candidates):
            value = score(problem.model, to_spec(candidate, problem.base, config.factor), problem.data,
                          config.batch_size)
            children.append(Scored(candidate, value))
            state.seen[candidate.key] = value
            bar.update(1)
        state.population = next_population(state, children, config.population)
        write_generation(output, generation, state, children, time.perf_counter() - start, problem.base,
                         problem.head_dim, config.factor)
        state.generation = generation
        bar.set_postfix(generation=generation, best=f"{state.population[0].score:.4f}")
        if on_generation is not None:
            on_generation(generation, state)
    bar.close()
    best = state.population[0]
    return SearchResult(to_spec(best.candidate, problem.base, config.factor), best.score, state.generation + 1,
                        output, state.history)


def scored_seeds(output: Path) -> dict[str, Scored]:
    """The seeds generation 0 of the search in `output` scored, by method (linear, ntk, yarn)."""
    from ropescale.search.space import SEED_METHODS

    path = generation_path(Path(output), 0)
    if not path.is_file():
        return {}
    children = [Scored.from_record(item) for item in read_json(path)["children"]]
    return {s.candidate.origin: s for s in children if s.candidate.origin in SEED_METHODS}
