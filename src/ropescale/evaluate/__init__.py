"""Long-context evaluation: perplexity against length, passkey, needle in a haystack, RULER, short-context regression.

Every task runs through one driver (`evaluate`) and writes one row schema (`Result`) to a JSON-lines file
(`ResultsFile`), one finished cell at a time; a rerun with the same output skips finished cells.

    from ropescale.evaluate import PerplexityTask, evaluate
    evaluate(PerplexityTask(lengths=[256, 1024]), "embedded", spec=spec, output="results.jsonl")
"""

from ropescale.evaluate.driver import Cell, Measurement, Subject, evaluate, remaining_cells
from ropescale.evaluate.needle import NeedleTask
from ropescale.evaluate.passkey import PasskeyTask
from ropescale.evaluate.perplexity import PerplexityTask, token_byte_lengths, window_nll, windows
from ropescale.evaluate.results import TASKS, Result, ResultsFile
from ropescale.evaluate.ruler import RulerTask
from ropescale.evaluate.short_context import ShortContextTask

# `ropescale eval` sub-task name -> task class
TASK_CLASSES = {
    "perplexity": PerplexityTask,
    "passkey": PasskeyTask,
    "needle": NeedleTask,
    "short-context": ShortContextTask,
    "ruler": RulerTask,
}

__all__ = [
    "Cell", "Measurement", "NeedleTask", "PasskeyTask", "PerplexityTask", "Result", "ResultsFile", "RulerTask",
    "ShortContextTask", "Subject", "TASKS", "TASK_CLASSES", "evaluate", "remaining_cells", "token_byte_lengths",
    "window_nll", "windows",
]
