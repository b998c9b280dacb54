"""`ropescale study`: the whole comparison in one command — training-free methods against the unscaled model,
equal-budget fine-tuning (yarn, linear, yarn + PoSE), evaluation at 1…16 × L0, and a report a person can read.

    from ropescale.study import StudyConfig, run_study
    report = run_study(StudyConfig.from_yaml("recipes/study-embedded.yaml", output="demo-output"))
"""

from ropescale.study.config import EvalSettings, FinetuneRun, StudyConfig
from ropescale.study.runner import run_study

__all__ = ["EvalSettings", "FinetuneRun", "StudyConfig", "run_study"]
