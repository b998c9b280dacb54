"""scripts/eval_training_free.sh end to end on a tiny random model (small lengths, few methods)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_training_free_script_writes_results_and_report(tiny_lm_dir, tmp_path):
    out = tmp_path / "tf"
    env = {**os.environ, "MODEL": str(tiny_lm_dir), "OUT": str(out), "METHODS": "default yarn",
           "FACTOR": "2", "LENGTHS": "128,256", "MAX_WINDOWS": "1", "TRIALS": "1", "DEPTHS": "0.5",
           "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "eval_training_free.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = (out / "report.md").read_text()
    for label in ("| default |", "| yarn ×2 |", "effective length"):
        assert label in report
    assert {"perplexity.png", "passkey.png", "scaling.png"} <= {p.name for p in out.iterdir()}
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (2 * 3 + 2 * 2)  # methods × (perplexity 2 lengths × 3 metrics + passkey 2 cells × 2)
    again = subprocess.run(["bash", str(ROOT / "scripts" / "eval_training_free.sh")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("nothing to do") == 4  # a rerun recomputes nothing
    assert (out / "results.jsonl").read_text().splitlines() == lines
