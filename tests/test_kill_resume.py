"""No run ever loses finished work: SIGKILL and SIGINT at random moments of a real evaluation and a real fine-tune.

Each job runs as `python -m ropescale ...` subprocesses. A kill lands at a seeded random moment after the job has
started working (its output file exists); after every kill each file on disk must be complete and loadable (the
results file parses, ignoring at most a torn last line; the latest checkpoint is a finished one and loads; loss.csv
parses), and rerunning the same command (`--resume` for a fine-tune with a checkpoint) must end with exactly the
numbers of an uninterrupted run: the same result values, torch.equal final weights.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ropescale.cli.main import main

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[1] / "src"
SEED = 20240611
STEPS = "40"   # ~2.5 s of training, a checkpoint after every step
EVAL_KILLS, FINETUNE_KILLS = 10, 10   # 20 kill points in all
WINDOW_S = float(os.environ.get("ROPESCALE_KILL_WINDOW_S", "0.4"))   # kills land this long after work starts
LENGTHS = ",".join(str(32 * k) for k in range(1, 13))   # 12 cells, ~2 s of work on 2 busy cores


def eval_argv(model, data, output):
    return ["eval", "perplexity", "--model", str(model), "--data", str(data), "--lengths", LENGTHS,
            "--max-windows", "6", "--output", str(output)]


def finetune_argv(model, data, output):
    return ["finetune", "--model", str(model), "--method", "linear", "--factor", "8", "--seq-len", "128",
            "--steps", STEPS, "--save-every", "1", "--warmup-steps", "0", "--data", str(data), "--output", str(output)]


def start(argv, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as handle:   # a file, not a pipe: a full pipe would stall the child
        return subprocess.Popen([sys.executable, "-m", "ropescale", *argv], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=_default_sigint)


def _default_sigint():
    # a job started in the background by a non-interactive shell inherits SIGINT as ignored, and Python then
    # never raises KeyboardInterrupt; a user's terminal has the default, which is what these tests are about
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def shows(log: Path, text: str):
    """started() for a job whose output (stdout and stderr, in `log`) shows `text` once it is working."""
    return lambda: log.exists() and text in log.read_text(encoding="utf-8", errors="replace")


def interrupt_after_work_starts(proc, started, rng, window_s, sig, timeout_s=120) -> bool:
    """Wait until `started()` (the job is working), then a random moment in [0, window_s], then send `sig`.
    Returns False when the process finished on its own first."""
    deadline = time.monotonic() + timeout_s
    while not started() and proc.poll() is None:
        assert time.monotonic() < deadline, "the job never started working"
        time.sleep(0.02)
    time.sleep(rng.uniform(0, window_s))
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return True


# ------------------------------------------------------------------------------------------------ evaluation

def check_results_file(path: Path) -> list:
    """Every line but a torn last one parses; every cell present has all its metrics (one cell = one write)."""
    from ropescale.evaluate import ResultsFile

    if not path.exists():
        return []
    rows = ResultsFile(path).read()
    by_length: dict[int, set] = {}
    for row in rows:
        by_length.setdefault(row.length, set()).add(row.metric)
    assert all(metrics == {"nll", "perplexity", "bits_per_byte"} for metrics in by_length.values()), by_length
    return rows


def values(rows) -> dict:
    from ropescale.evaluate.results import latest

    return {(r.length, r.metric): r.value for r in latest(rows)}


@pytest.fixture(scope="module")
def eval_reference(tmp_path_factory, tiny_lm_dir, text_file):
    out = tmp_path_factory.mktemp("eval-ref") / "r.jsonl"
    assert main(eval_argv(tiny_lm_dir, text_file, out)) == 0
    return values(check_results_file(out))


def test_eval_killed_at_random_moments_resumes_to_the_same_rows(tmp_path, tiny_lm_dir, text_file, eval_reference):
    rng = random.Random(SEED)
    out = tmp_path / "r.jsonl"
    argv = eval_argv(tiny_lm_dir, text_file, out)
    kills, runs = 0, 0
    while kills < EVAL_KILLS:
        log = tmp_path / f"log-{runs}.txt"
        proc = start(argv, log)
        runs += 1
        before = len(check_results_file(out))
        if interrupt_after_work_starts(proc, shows(log, "cell/s"), rng, WINDOW_S, signal.SIGKILL):
            kills += 1
            rows = check_results_file(out)   # complete and parseable after every kill
            assert len(rows) >= before
            if kills == EVAL_KILLS // 2:   # a kill in the middle of a write: a torn last line is ignored, then cut
                with open(out, "ab") as handle:
                    handle.write(b'{"model": "torn by a kill", "metr')
                assert len(check_results_file(out)) == len(rows)
        else:
            assert proc.returncode == 0, (tmp_path / f"log-{runs - 1}.txt").read_text()
            assert values(check_results_file(out)) == eval_reference
            out.unlink()   # a finished job: start another one for the remaining kill points
    assert start(argv, tmp_path / "log-final.txt").wait(timeout=300) == 0
    rows = check_results_file(out)
    assert values(rows) == eval_reference
    assert len(rows) == len(eval_reference)   # no cell measured twice


# ------------------------------------------------------------------------------------------------ fine-tuning

def final_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


def check_run_dir(run: Path) -> None:
    """The latest checkpoint is a finished one and loads; loss.csv parses (a torn last row aside); a finished run's
    training.json and weights load."""
    from safetensors.torch import load_file

    from ropescale.train.checkpoint import LOSS_COLUMNS, checkpoint_dirs, read_state

    found = checkpoint_dirs(run)
    if found:
        latest = found[-1]
        assert latest.name.startswith("step-")
        state = read_state(latest)
        assert state.step == int(latest.name.split("-")[1])
        assert load_file(latest / "model.safetensors")
        assert torch.load(latest / "optimizer.bin", weights_only=False)["state"]
    loss = run / "loss.csv"
    if loss.exists():
        lines = loss.read_text(encoding="utf-8").splitlines()
        whole = lines[1:] if loss.read_bytes().endswith(b"\n") else lines[1:-1]
        assert not lines or lines[0] == ",".join(LOSS_COLUMNS)
        steps = [int(line.split(",")[0]) for line in whole]
        assert all(len(line.split(",")) == len(LOSS_COLUMNS) for line in whole)
        assert steps == list(range(1, len(steps) + 1)), steps   # resumed runs leave no duplicate or gap
    if (run / "training.json").exists():
        assert json.loads((run / "training.json").read_text())["steps"] == int(STEPS)
        assert final_weights(run)


def finetune_command(model, data, run: Path) -> list[str]:
    """What a user types after a kill: --resume when a checkpoint exists, --overwrite when only logs do."""
    from ropescale.train.checkpoint import checkpoint_dirs

    argv = finetune_argv(model, data, run)
    if checkpoint_dirs(run):
        return argv + ["--resume"]
    return argv + (["--overwrite"] if run.exists() and any(run.iterdir()) else [])


@pytest.fixture(scope="module")
def finetune_reference(tmp_path_factory, tiny_train_model_dir, text_file):
    run = tmp_path_factory.mktemp("ft-ref") / "run"
    assert main(finetune_argv(tiny_train_model_dir, text_file, run)) == 0
    return final_weights(run), (run / "loss.csv").read_text()


def assert_same_run(run: Path, reference) -> None:
    weights, loss_csv = reference
    got = final_weights(run)
    assert got.keys() == weights.keys()
    assert all(torch.equal(got[k], weights[k]) for k in weights)
    strip = [line.split(",")[:4] + line.split(",")[5:] for line in loss_csv.splitlines()]   # elapsed_s differs
    assert [line.split(",")[:4] + line.split(",")[5:] for line in (run / "loss.csv").read_text().splitlines()] == strip


def test_finetune_killed_at_random_moments_resumes_to_the_same_weights(tmp_path, tiny_train_model_dir, text_file,
                                                                       finetune_reference):
    rng = random.Random(SEED + 1)
    run = tmp_path / "run"
    kills, runs = 0, 0
    while kills < FINETUNE_KILLS:
        log = tmp_path / f"log-{runs}.txt"
        proc = start(finetune_command(tiny_train_model_dir, text_file, run), log)
        runs += 1
        if interrupt_after_work_starts(proc, shows(log, "trainable parameters"), rng, WINDOW_S, signal.SIGKILL):
            kills += 1
            check_run_dir(run)
        else:
            assert proc.returncode == 0, (tmp_path / f"log-{runs - 1}.txt").read_text()
            assert_same_run(run, finetune_reference)
            run = tmp_path / f"run-{runs}"   # a finished job: start another one for the remaining kill points
    argv = finetune_command(tiny_train_model_dir, text_file, run)
    assert start(argv, tmp_path / "log-final.txt").wait(timeout=300) == 0, (tmp_path / "log-final.txt").read_text()
    check_run_dir(run)
    assert_same_run(run, finetune_reference)
    leftovers = [p.name for p in [*run.iterdir(), *(run / "checkpoints").iterdir()] if p.name.startswith(".")]
    assert not leftovers, leftovers   # no temporary of a killed save survives the finished run


# ------------------------------------------------------------------------------------------------ Ctrl-C

def interrupted_line(log: Path, word: str = "interrupted") -> str:
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text, text
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith(f"ropescale: {word}; "), text
    return last


def test_sigint_stops_eval_with_130_naming_the_results_and_the_rerun_continues(tmp_path, tiny_lm_dir, text_file,
                                                                                eval_reference):
    out = tmp_path / "r.jsonl"
    argv = eval_argv(tiny_lm_dir, text_file, out)
    proc = start(argv, tmp_path / "log.txt")
    assert interrupt_after_work_starts(proc, out.exists, random.Random(SEED + 2), 0.2, signal.SIGINT)
    assert proc.returncode == 130
    line = interrupted_line(tmp_path / "log.txt")
    assert str(out) in line and "rerun the same command" in line
    done = len(check_results_file(out))
    assert 0 < done < len(eval_reference)
    assert start(argv, tmp_path / "log2.txt").wait(timeout=300) == 0
    assert "wrote" in (tmp_path / "log2.txt").read_text()
    assert values(check_results_file(out)) == eval_reference


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_signal_stops_finetune_naming_the_checkpoint_and_resume_continues(tmp_path, tiny_train_model_dir, text_file,
                                                                          finetune_reference, sig, code, word):
    """Ctrl-C, and a scheduler's stop (SLURM, Kubernetes, `kill PID`) the same way: a checkpoint, one line, the
    shell's exit code for that signal; --resume then ends with the uninterrupted run's weights."""
    from ropescale.train.checkpoint import checkpoint_dirs

    run = tmp_path / "run"
    proc = start(finetune_argv(tiny_train_model_dir, text_file, run), tmp_path / "log.txt")
    started = lambda: len(checkpoint_dirs(run)) >= 2   # noqa: E731 - a few steps in
    assert interrupt_after_work_starts(proc, started, random.Random(SEED + 3), 0.2, sig)
    assert proc.returncode == code
    line = interrupted_line(tmp_path / "log.txt", word)
    last = checkpoint_dirs(run)[-1]
    assert f"last checkpoint {last}" in line and "--resume" in line
    assert not (run / "training.json").exists()
    argv = finetune_argv(tiny_train_model_dir, text_file, run) + ["--resume"]
    assert start(argv, tmp_path / "log2.txt").wait(timeout=300) == 0
    assert_same_run(run, finetune_reference)
