"""The planner against a peak measured in this run: one training step of the tests' tiny Llama in a fresh process,
as benchmarks/memory_plan.py measures every case (peak RSS minus the RSS before the model was built)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_estimate_of_a_training_step_is_within_20_percent_of_its_measured_peak():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import memory_plan as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    # the child runs as the benchmark does from a shell, in a minimal environment: inheriting the whole test
    # session once made the same child measure 1.1 GiB instead of ~140 MiB in CI (cause not found)
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent / "src"), str(BENCHMARKS)])
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "memory_plan.py"), "--child", "tiny", "train", "2048", "1"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    predicted = bench.predict(row)["predicted_mib"]
    assert 0.8 <= predicted / row["measured_mib"] <= 1.2, (predicted, row)
