"""Run every benchmark in turn (what `make bench` does); each writes benchmarks/results/*.json, then the
markdown summary that benchmarks/README.md shows is printed."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ["eval_memory.py", "finetune_step.py", "throughput.py", "scaling.py", "summarize.py"]:
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
