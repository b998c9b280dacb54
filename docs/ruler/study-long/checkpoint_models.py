"""Turn a fine-tuning run's kept checkpoints into model folders that `ropescale eval` loads.

A checkpoint holds the training module's weights (`lm.` before every name) and no config; the run's final folder
has the config and tokenizer. For each `checkpoints/step-N`, writes `OUT/step-N` with the run's files and the
checkpoint's weights under the model's own names.

    python docs/ruler/study-long/checkpoint_models.py runs/ruler-long/runs/yarn-pose512-10000 runs/ruler-long/steps
"""

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main(run: Path, out: Path) -> None:
    for checkpoint in sorted((run / "checkpoints").glob("step-*")):
        folder = out / checkpoint.name
        folder.mkdir(parents=True, exist_ok=True)
        for f in run.iterdir():
            if f.is_file() and f.name != "model.safetensors":
                shutil.copy2(f, folder / f.name)
        weights = load_file(checkpoint / "model.safetensors")
        save_file({name.removeprefix("lm."): t for name, t in weights.items()}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        print(folder)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
