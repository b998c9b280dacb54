"""Evolutionary search of longrope's per-pair factors (LongRoPE 2024; LongRoPE2's needle-driven fitness).

    from ropescale.search import search
    result = search("embedded", factor=8, output="search-x8", generations=20, fitness="needle")
    result.spec          # a RopeSpec (method longrope), also in search-x8/best.json
"""

from ropescale.search.evolution import SearchResult, SearchSettings, load_state, search
from ropescale.search.fitness import FITNESSES, fitness_data, score
from ropescale.search.space import Candidate, Space, crossover, is_monotone, method_divisors, mutate, seeds

__all__ = ["search", "SearchResult", "SearchSettings", "load_state", "FITNESSES", "fitness_data", "score",
           "Candidate", "Space", "crossover", "is_monotone", "method_divisors", "mutate", "seeds"]
