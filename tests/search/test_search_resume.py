"""`ropescale.search.search`: every generation on disk, and a killed search rerun with the same settings ends with
exactly the candidates, scores and best spec of an uninterrupted one."""

import json
from pathlib import Path

import pytest

import ropescale.search.fitness
from ropescale.rope.spec import read_spec
from ropescale.search import load_state, search
from ropescale.search.space import Space, is_monotone

GENERATIONS = 4


def _search(model, output, generations=GENERATIONS, **kw):
    settings = dict(factor=4.0, population=6, samples=2, fitness="perplexity", seed=7)
    settings.update(kw)
    return search(str(model), output=output, generations=generations, progress=False, **settings)


def _generations(output):
    """Every generation's population and children with their scores (not its timing)."""
    return [{k: v for k, v in json.loads(p.read_text()).items() if k != "summary"}
            for p in sorted(output.glob("generation-*.json"))]


@pytest.fixture(scope="module")
def uninterrupted(tiny_train_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("full")
    return _search(tiny_train_model_dir, output), output


def test_every_generation_is_written_with_the_best_spec(uninterrupted):
    result, output = uninterrupted
    assert result.generations == GENERATIONS and len(result.history) == GENERATIONS
    assert [p.name for p in sorted(output.glob("generation-*.json"))] == [f"generation-{g:04d}.json"
                                                                       for g in range(GENERATIONS)]
    assert read_spec(output / "best.json") == result.spec and result.spec.method == "longrope"
    bests = [row["best"] for row in result.history]
    assert bests == sorted(bests, reverse=True)  # the best of a generation is never lost
    state = load_state(output)
    space = Space(len(result.spec.long_factor), 8.0)
    assert all(space.contains(s.candidate) and is_monotone(s.candidate.long_factor) for s in state.population)
    origins = {c["origin"] for c in json.loads((output / "generation-0000.json").read_text())["children"]}
    assert {"linear", "ntk", "yarn"} <= origins
    assert (output / "history.csv").read_text().splitlines()[0].startswith("generation,best,median")


def test_no_candidate_is_scored_twice(uninterrupted):
    _, output = uninterrupted
    keys = [(tuple(c["long_factor"]), c["attention_factor"]) for g in _generations(output) for c in g["children"]]
    assert len(keys) == len(set(keys))


def test_a_search_killed_between_generations_resumes_to_the_same_result(uninterrupted, tiny_train_model_dir,
                                                                        tmp_path):
    def kill(generation, state):
        if generation == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _search(tiny_train_model_dir, tmp_path, on_generation=kill)
    assert len(_generations(tmp_path)) == 2
    resumed = _search(tiny_train_model_dir, tmp_path)
    assert _generations(tmp_path) == _generations(uninterrupted[1])
    assert resumed.spec == uninterrupted[0].spec and resumed.score == uninterrupted[0].score


def test_a_search_killed_inside_a_generation_resumes_to_the_same_result(uninterrupted, tiny_train_model_dir,
                                                                        tmp_path, monkeypatch):
    score, calls = ropescale.search.fitness.score, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # the second of generation 1 (generation 0 scores 6, then 2 per generation)
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    monkeypatch.setattr(ropescale.search.fitness, "score", dying)
    with pytest.raises(KeyboardInterrupt):
        _search(tiny_train_model_dir, tmp_path)
    monkeypatch.setattr(ropescale.search.fitness, "score", score)
    assert len(_generations(tmp_path)) == 1
    _search(tiny_train_model_dir, tmp_path)
    assert _generations(tmp_path) == _generations(uninterrupted[1])


def test_more_generations_search_on_from_the_last_one(uninterrupted, tiny_train_model_dir, tmp_path):
    _search(tiny_train_model_dir, tmp_path, generations=2)
    longer = _search(tiny_train_model_dir, tmp_path, generations=GENERATIONS)
    assert longer.spec == uninterrupted[0].spec


def test_a_folder_of_another_search_is_refused(uninterrupted, tiny_train_model_dir):
    with pytest.raises(ValueError, match=r"other settings \(seed: 7 there, 8 now\)"):
        _search(tiny_train_model_dir, uninterrupted[1], seed=8)


def test_a_call_that_fails_in_setup_leaves_the_folder_to_the_corrected_one(tiny_train_model_dir, tmp_path):
    with pytest.raises(ValueError, match="missing.txt"):
        _search(tiny_train_model_dir, tmp_path, generations=1, data=str(tmp_path / "missing.txt"))
    assert not (tmp_path / "search.json").exists()
    assert len(_search(tiny_train_model_dir, tmp_path, generations=1).history) == 1


def test_the_embedded_model_named_or_not_is_the_same_search(tmp_path):
    from ropescale.search.evolution import check_settings

    (tmp_path / "search.json").write_text(json.dumps({"model": "embedded", "seed": 0}))
    check_settings(tmp_path, {"model": None, "seed": 0})
    with pytest.raises(ValueError, match="other settings"):
        check_settings(tmp_path, {"model": "some/model", "seed": 0})


def test_a_search_of_the_embedded_model_resumes_whether_or_not_it_is_named(tmp_path):
    settings = dict(factor=1.25, length=260, population=4, samples=1, fitness="perplexity", progress=False)
    search("embedded", output=tmp_path, generations=1, **settings)
    assert json.loads((tmp_path / "search.json").read_text())["model"] is None   # recorded as a call without it
    assert len(search(None, output=tmp_path, generations=2, **settings).history) == 2


def test_the_needle_fitness_searches_too(tiny_train_model_dir, tmp_path):
    result = _search(tiny_train_model_dir, tmp_path, generations=2, factor=8.0, fitness="needle",
                     fixed_attention_scale=1.1)
    assert result.spec.attention_factor == 1.1 and len(result.history) == 2


@pytest.mark.parametrize("settings,message", [
    ({"population": 3}, "`population` must be an integer >= 4"),
    ({"fitness": "bleu"}, "`fitness` must be one of perplexity, needle"),
    ({"factor": 1.0}, "`factor` must be a number > 1"),
    ({"max_factor": 2.0}, "`max_factor` (2) must be >= `factor` (4)"),
    ({"length": 16}, "`length` 16 must exceed the model's L0 = 16"),
    ({"samples": 0}, "`samples` must be a positive integer"),
    ({"parents": 9}, "`parents` must lie in [2, population]"),
    ({"generations": 0}, "`generations` must be a positive integer"),
    ({"fitness": "needle", "length": 40}, "`length` 40 is too short for the needle fitness's documents"),
    ({"fixed_attention_scale": 0.0}, "`fixed_attention_scale` must be > 0"),
])
def test_bad_settings_are_named(tiny_train_model_dir, tmp_path, settings, message):
    with pytest.raises(ValueError) as info:
        _search(tiny_train_model_dir, tmp_path, **settings)
    assert message in str(info.value)


@pytest.mark.integration
def test_a_search_process_killed_with_sigkill_resumes_to_the_same_result(tiny_train_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from ropescale.cli.main import main

    def argv(output):
        return ["search", "--model", str(tiny_train_model_dir), "--factor", "4", "--output", str(output),
                "--generations", "6", "--population", "6", "--samples", "2", "--fitness", "perplexity"]

    assert main(argv(tmp_path / "full")) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ropescale", *argv(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / "generation-0001.json").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert len(_generations(tmp_path / "killed")) < 6
    assert main(argv(tmp_path / "killed")) == 0
    assert _generations(tmp_path / "killed") == _generations(tmp_path / "full")
    assert (tmp_path / "killed" / "best.json").read_text() == (tmp_path / "full" / "best.json").read_text()


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "recipes" / "specs").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_spec_reads_and_fits_the_embedded_model(path):
    from ropescale.model_info import ModelInfo, check_spec_fits
    from ropescale.models import load_config

    spec = check_spec_fits(ModelInfo.from_config(load_config(None)), read_spec(path))
    assert spec.method == "longrope" and is_monotone(spec.long_factor)
    assert f"x{spec.factor:g}" in path.stem
