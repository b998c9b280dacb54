"""Read a model's config.json from a local directory or a Hugging Face Hub id (no weights): the loader every
command that takes `--model` shares."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# "name" or "owner/name" as the Hub spells repository ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_config_json(model: str, flag: str = "--model") -> dict[str, Any]:
    """config.json of `model` as a dict: `model/config.json` if `model` is a local directory (or a path to a
    config.json), else downloaded from the Hub. Every failure is a ValueError/OSError with one clear line."""
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise OSError(f"{flag} {model}: the directory has no config.json")
    elif not path.is_file():
        if not _HUB_ID.match(model) or model.startswith((".", "~")):
            raise OSError(f"{flag} {model}: no such directory (and not a Hugging Face Hub id)")
        path = Path(_hub_config(model, flag))
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} {model}: {path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{flag} {model}: {path} does not hold a JSON object")
    return config


def _hub_config(repo_id: str, flag: str) -> str:
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id, "config.json")
    except Exception as exc:  # offline, gated, missing repo …: one line, whatever the hub library raises
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise OSError(f"{flag} {repo_id}: not a local directory, and config.json could not be fetched from the "
                      f"Hugging Face Hub ({type(exc).__name__}: {reason})") from None
