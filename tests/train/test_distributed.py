"""Real processes: 2-process DDP on CPU (gloo) against one process, and SIGKILL during a run then --resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ropescale
from ropescale.train import FinetuneConfig, finetune
from ropescale.io import read_loss_csv
from ropescale.train.checkpoint import checkpoint_dirs

pytestmark = pytest.mark.integration


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(ropescale.__file__).resolve().parents[1]))
    env.pop("ROPESCALE_DEBUG", None)
    return env


def _flags(model, text, out, *extra):
    return ["finetune", "--model", str(model), "--data", str(text), "--method", "yarn", "--factor", "8",
            "--lr", "1e-3", "--warmup-steps", "1", "--seed", "0", "--output", str(out), *map(str, extra)]


@pytest.mark.parametrize("passkey_share", [0.0, 0.5])   # 0.5: rows scoring every token beside rows scoring answers
def test_two_processes_give_the_one_process_loss_curve(tiny_train_model_dir, text_file, tmp_path, passkey_share):
    two = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ropescale", *_flags(tiny_train_model_dir, text_file, two, "--steps", 3, "--batch-size", 1,
                                      "--passkey-share", passkey_share)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = finetune(FinetuneConfig(model=str(tiny_train_model_dir), data=str(text_file), method="yarn", factor=8.0,
                                  lr=1e-3, warmup_steps=1, seed=0, steps=3, batch_size=2, output=str(tmp_path / "one"),
                                  passkey_share=passkey_share))
    a, b = read_loss_csv(one / "loss.csv"), read_loss_csv(two / "loss.csv")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"] == 256 * x["step"]
        assert abs(x["loss"] - y["loss"]) <= 1e-5 and abs(x["grad_norm"] - y["grad_norm"]) <= 1e-4
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-5


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_train_model_dir, text_file, tmp_path):
    steps, flags = 40, ("--batch-size", 4, "--save-every", 4, "--keep-checkpoints", 1)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ropescale",
                             *_flags(tiny_train_model_dir, text_file, killed, "--steps", steps, *flags)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(int(p.name.split("-")[1]) >= 8 for p in checkpoint_dirs(killed)):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before a checkpoint was seen"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "training.json").exists()
    logged = len(read_loss_csv(killed / "loss.csv"))
    assert logged < steps

    resume = subprocess.run([sys.executable, "-m", "ropescale",
                             *_flags(tiny_train_model_dir, text_file, killed, "--steps", steps, *flags, "--resume")],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr[-3000:]
    straight = finetune(FinetuneConfig(model=str(tiny_train_model_dir), data=str(text_file), method="yarn", factor=8.0,
                                       lr=1e-3, warmup_steps=1, seed=0, steps=steps, batch_size=4, save_every=4,
                                       output=str(tmp_path / "straight")))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["loss"] for r in read_loss_csv(run / "loss.csv")] for run in (killed, straight)]
    assert losses[0] == losses[1]
