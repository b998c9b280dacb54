"""What the model said: one JSON line per prompt of a generative task (passkey, needle, RULER), beside the results.

lm-evaluation-harness keeps every sample with `--log_samples`, RULER writes prediction files: when a number looks
wrong, the outputs are the first thing to read. A record holds who and what was measured (model, method, factor,
task, metric, length, depth, a short hash of the cell's settings), the sample's index, prompt length in tokens,
the expected answer, the output exactly as decoded, whether it was scored correct, and the answer's teacher-forced
cost where the task measures it. The prompt text only with `log_prompts` (a 128K-token run would write gigabytes).

The file is appended to before the cell's result rows, so a kill between the two leaves samples of a cell that
the rerun measures again: readers keep the last record of each (cell, metric, index).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ropescale.evaluate.results import canonical
from ropescale.io import append_lines, read_json_lines


def samples_path(results: str | Path) -> Path:
    """results.jsonl -> results.samples.jsonl, in the same folder."""
    results = Path(results)
    return results.with_name(f"{results.stem}.samples{results.suffix or '.jsonl'}")


def settings_key(settings: dict) -> str:
    return hashlib.sha1(canonical(settings).encode()).hexdigest()[:12]


class SamplesFile:
    """Append the samples of finished cells; read them back, one record per (cell, metric, index)."""

    def __init__(self, path: str | Path, log_prompts: bool = False):
        self.path, self.log_prompts = Path(path), log_prompts

    def append(self, head: dict, measured, tokenizer) -> None:
        """head: model, method, factor, task, length, depth and the settings key; measured: the cell's
        Measurements, whose `samples` are written (prompt ids decoded when prompts are logged)."""
        lines = []
        for m in measured:
            for sample in m.samples:
                record = {**head, "metric": m.metric, **sample}
                ids = record.pop("prompt_ids", None)
                if self.log_prompts and ids is not None:
                    record["prompt"] = tokenizer.decode(ids)
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        append_lines(self.path, "".join(lines))

    def read(self) -> list[dict]:
        keep: dict[tuple, dict] = {}
        for r in read_json_lines(self.path, _record):
            key = (r["model"], r["method"], r["factor"], r["task"], r["length"], r.get("depth"), r["settings"],
                   r["metric"], r.get("index"))
            keep[key] = r
        return list(keep.values())


def _record(obj) -> dict:
    if not isinstance(obj, dict) or not {"model", "task", "metric", "length", "output"} <= set(obj):
        raise ValueError("not a sample record")
    return obj


def failing(records: list[dict], limit: int = 2) -> dict[tuple, list[dict]]:
    """Up to `limit` failing samples per (model, method, factor, task, metric, length)."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("correct", True):
            continue
        key = (r["model"], r["method"], r["factor"], r["task"], r["metric"], r["length"])
        if len(out.setdefault(key, [])) < limit:
            out[key].append(r)
    return out
