"""The pre-flight memory check (issue #21): eval, finetune, study and generate refuse a run that cannot fit before
they allocate or write anything, in one line naming the estimate and the knobs; --force runs anyway; a narrow fit
warns once and runs."""

import os
import resource
import subprocess
import sys
import time

import pytest

from ropescale import memory_plan
from ropescale.cli.main import main
from ropescale.evaluate import Cell, PerplexityTask, evaluate
from ropescale.evaluate.driver import largest_unit
from ropescale.models import load_config
from ropescale.search import search


@pytest.fixture
def no_memory(monkeypatch):
    """A device with 1 MiB available: nothing fits."""
    monkeypatch.setattr(memory_plan, "available_memory", lambda device="cpu": memory_plan.MiB)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "not enough memory" in err and "needs an estimated" in err and "is CPU RAM available" in err
    return err


@pytest.mark.parametrize("task", ["perplexity", "passkey", "needle", "ruler"])
def test_eval_that_cannot_fit_exits_2_and_writes_nothing(task, tiny_lm_dir, tmp_path, no_memory, capsys):
    out = tmp_path / "results.jsonl"
    assert main(["eval", task, "--model", str(tiny_lm_dir), "--lengths", "256", "--output", str(out)]) == 2
    err = _one_line(capsys)
    assert f"{task} at 256 tokens" in err and "--lengths" in err and "--batch-size" in err and "--force" in err
    assert not out.exists()


def test_eval_force_runs_anyway(tiny_lm_dir, tmp_path, no_memory, capsys):
    out = tmp_path / "results.jsonl"
    assert main(["eval", "perplexity", "--model", str(tiny_lm_dir), "--lengths", "64", "--max-windows", "1",
                 "--output", str(out), "--force"]) == 0
    assert out.exists() and "not enough memory" not in capsys.readouterr().err


def test_eval_that_fits_narrowly_warns_once_and_runs(tiny_lm_dir, tmp_path, monkeypatch, capsys):
    task = PerplexityTask(lengths=[64], max_windows=1)
    needed = largest_unit(task, [Cell(64)], load_config(str(tiny_lm_dir)))[0].total
    monkeypatch.setattr(memory_plan, "available_memory", lambda device="cpu": int(needed / 0.9))
    out = tmp_path / "results.jsonl"
    assert main(["eval", "perplexity", "--model", str(tiny_lm_dir), "--lengths", "64", "--max-windows", "1",
                 "--output", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "90%" in warnings[0] and out.exists()


def test_evaluate_api_raises_value_error_naming_fields(tiny_lm_dir, tmp_path, no_memory):
    with pytest.raises(ValueError, match="`lengths`.*`batch_size`.*`chunk_size`"):
        evaluate(PerplexityTask(lengths=[64]), str(tiny_lm_dir), output=tmp_path / "r.jsonl", progress=False)
    assert not (tmp_path / "r.jsonl").exists()


def test_finetune_that_cannot_fit_exits_2_before_creating_its_output(tiny_train_model_dir, text_file, tmp_path,
                                                                     no_memory, capsys):
    out = tmp_path / "run"
    assert main(["finetune", "--model", str(tiny_train_model_dir), "--data", str(text_file), "--seq-len", "128",
                 "--steps", "1", "--output", str(out)]) == 2
    err = _one_line(capsys)
    assert "training step of 1 x 128 tokens" in err and "--seq-len" in err and "--lora-rank" in err
    assert not out.exists()


def test_finetune_api_raises_and_force_trains(tiny_train_model_dir, text_file, tmp_path, no_memory):
    from ropescale.train import FinetuneConfig, finetune

    config = FinetuneConfig(model=str(tiny_train_model_dir), data=str(text_file), method="yarn", factor=4.0, steps=1,
                            output=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="`seq_len`"):
        finetune(config)
    assert finetune(config, force=True) == tmp_path / "run"


def _study_argv(model_dir, text_file, out, tmp_path, runs: bool):
    recipe = tmp_path / "study.yaml"
    recipe.write_text(
        f"# ropescale study study.yaml --output OUT\nmodel: {model_dir}\nfactor: 2\nlengths: [64, 128]\n"
        f"methods: [yarn]\neval: {{data: {text_file}, max_tokens: 128, passkey_trials: 1, passkey_depths: [0.5], "
        "ruler_samples: 0}\n"
        f"finetune: {{data: {text_file}, steps: 1, seq_len: 128, gradient_checkpointing: false}}\n"
        + ("runs: [{name: yarn, method: yarn}]\n" if runs else "runs: []\n"))
    return ["study", str(recipe), "--output", str(out)]


def test_study_checks_every_stage_before_writing_anything(tiny_lm_dir, text_file, tmp_path, monkeypatch, capsys):
    """Memory enough for every evaluation but not for the fine-tuning step of its third stage: refused up front."""
    from ropescale.study import StudyConfig
    from ropescale.study.runner import make_tasks, study_units

    out = tmp_path / "study"
    argv = _study_argv(tiny_lm_dir, text_file, out, tmp_path, runs=True)
    config = StudyConfig.from_yaml(argv[1], output=str(out))
    units = study_units(config, make_tasks(config, [64, 128], [128], 64, True), "cpu")
    evaluation = max(u[0].total for u in units if not u[1].startswith("fine-tune"))
    training = max(u[0].total for u in units if u[1].startswith("fine-tune"))
    assert training > evaluation
    monkeypatch.setattr(memory_plan, "available_memory", lambda device="cpu": (evaluation + training) // 2)
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "fine-tune run 'yarn'" in err
    assert not out.exists()


def test_generate_that_cannot_fit_exits_2_before_loading(tiny_lm_dir, no_memory, capsys, monkeypatch):
    import ropescale.models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the memory check")

    monkeypatch.setattr(ropescale.models, "load_model", refuse)
    assert main(["generate", "--model", str(tiny_lm_dir), "--prompt", "Once upon", "--max-new-tokens", "8"]) == 2
    assert "generating" in _one_line(capsys) and capsys.readouterr().out == ""


def _limit_memory():   # a broken check must fail this test, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))


def test_passkey_of_a_hundred_million_tokens_ends_within_seconds_with_exit_2(tmp_path):
    out = tmp_path / "results.jsonl"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ropescale", "eval", "passkey", "--lengths", "100000000",
                           "--output", str(out)], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "passkey at 100000000 tokens" in proc.stderr
    assert time.perf_counter() - start < 60 and not out.exists()


def test_search_that_cannot_fit_exits_2_before_writing_or_loading(tiny_train_model_dir, tmp_path, no_memory, capsys,
                                                                 monkeypatch):
    import ropescale.models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the memory check")

    monkeypatch.setattr(ropescale.models, "load_model", refuse)
    out = tmp_path / "search"
    argv = ["search", "--model", str(tiny_train_model_dir), "--factor", "4", "--output", str(out), "--generations",
            "1", "--population", "4", "--samples", "1", "--fitness", "perplexity"]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "scoring 1 x 64 tokens" in err and "--factor" in err and "--batch-size" in err and "--force" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="not enough memory: scoring 1 x 64 tokens"):
        search(str(tiny_train_model_dir), factor=4.0, output=out, generations=1, population=4, samples=1,
               fitness="perplexity", progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(memory_plan, "available_memory", lambda device="cpu": memory_plan.MiB)
    assert main(argv + ["--force"]) == 0 and (out / "best.json").is_file()
