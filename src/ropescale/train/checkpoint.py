"""The run directory: checks before a run, atomic checkpoints, resume, and the per-step loss curve.

Layout of `--output DIR`:
    DIR/config.json, model.safetensors, tokenizer*,  the final model (native transformers format, written by
        ropescale.json, README.md                    ropescale.export.hf.save_extended)
    DIR/training.json                                settings, steps, tokens, time, final loss, versions
    DIR/loss.csv                                     one row per optimizer step, appended and flushed
    DIR/checkpoints/step-0000020/                    accelerate state (model, optimizer, scheduler, RNG of
                                                     every process) + trainer_state.json (data position)

A checkpoint is written to `checkpoints/.tmp-step-N` and renamed into place with `os.replace`, so a run killed
while saving leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropescale.io import write_csv_atomic, write_json_atomic

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
LOSS_FILE = "loss.csv"
LOSS_COLUMNS = ("step", "loss", "lr", "tokens", "elapsed_s", "grad_norm")
RUN_MARKERS = (LOSS_FILE, "training.json", CHECKPOINTS)   # files that only a ropescale run writes


class _TiedWeightsNote(logging.Filter):
    """accelerate warns at every save that it dropped the duplicate of tied embeddings from the safetensors file;
    loading restores the tie (resume is exact with tied models), so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().split("] ")[-1].startswith("Removed shared tensor")


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNote())


def checkpoint_dirs(output: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary directories of an interrupted save are ignored)."""
    root = Path(output) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def check_run_dir(output: Path, resume: bool, overwrite: bool) -> Path | None:
    """Validate --output for this run; return the checkpoint to resume from (None for a fresh run).

    Read-only, so every process may call it; `clear_output_dir` does the deleting, on the main process.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"`output` {str(output)!r} is a file; give a directory for the run")
    if resume:
        found = checkpoint_dirs(output)
        if not found:
            raise ValueError(f"`resume`: {str(output)!r} has no checkpoint ({CHECKPOINTS}/step-*); start without "
                             "`resume`, and pass `save_every` N to write checkpoints")
        return found[-1]
    entries = list(output.iterdir()) if output.is_dir() else []
    if entries and not overwrite:
        raise ValueError(f"`output` {str(output)!r} is not empty; pass `resume` to continue its run or "
                         "`overwrite` to start it again")
    if entries and not any((output / name).exists() for name in RUN_MARKERS):
        raise ValueError(f"`overwrite`: {str(output)!r} holds files that no ropescale run wrote; "
                         "refusing to delete them, choose another `output`")
    return None


def clear_output_dir(output: Path) -> None:
    """Delete a previous run in `output` (after `check_run_dir` allowed it) and recreate it empty."""
    output = Path(output)
    if output.is_dir() and any(output.iterdir()):
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """A sentence naming what differs between a checkpoint's run and this one, or None when they match."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return f"{key} differs (checkpoint: {_short(saved.get(key))}, now: {_short(current.get(key))})"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class TrainerState:
    """Where a run is, saved in every checkpoint as trainer_state.json (next to accelerate's model, optimizer,
    scheduler and RNG states): the optimizer steps done, the samples and tokens they consumed, the seconds they
    took, the last step's loss, and the fingerprint of the run (what must not change on resume)."""

    step: int
    samples_seen: int
    tokens: int
    elapsed_s: float
    loss: float
    fingerprint: dict[str, Any]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerState:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


def read_state(checkpoint: Path) -> TrainerState:
    return TrainerState.from_dict(json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8")))


def save_checkpoint(accelerator, output: Path, state: TrainerState, keep: int) -> Path:
    """accelerate `save_state` into a temporary directory, then rename it to `checkpoints/step-N`; keep the last
    `keep`. Every process must call it (each writes its own RNG state)."""
    root = Path(output) / CHECKPOINTS
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
    if accelerator.is_main_process:
        for stale in root.glob(".tmp-step-*"):   # left by a run killed while saving; never a checkpoint
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE_FILE, dataclasses.asdict(state), sort_keys=True)
        if final.exists():  # os.replace cannot replace a non-empty directory
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(output)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


class LossLog:
    """`loss.csv`: one row per optimizer step, appended and flushed as soon as the step ends."""

    def __init__(self, output: Path, resume_step: int | None):
        self.path = Path(output) / LOSS_FILE
        if resume_step is not None and self.path.is_file():
            self._truncate(resume_step)
        new = not self.path.is_file()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(LOSS_COLUMNS)
            self._file.flush()

    def _truncate(self, step: int) -> None:
        """Drop rows written after the checkpoint we resume from: those steps run again. A row cut short by a
        kill (fewer columns) is dropped too."""
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        whole = [r for r in rows[1:] if len(r) == len(LOSS_COLUMNS) and r[0].isdigit() and r[-1]]
        write_csv_atomic(self.path, [list(LOSS_COLUMNS)] + [r for r in whole if int(r[0]) <= step])

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow([row[c] for c in LOSS_COLUMNS])
        self._file.flush()

    def close(self) -> None:
        self._file.close()

