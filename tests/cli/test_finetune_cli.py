"""`ropescale finetune` end to end on a tiny random Llama (vocab 4096, L0 16 -> 128 tokens), in process."""

import json

import pytest

from ropescale.cli.main import main
from ropescale.io import read_loss_csv


def _run(*argv):
    return main(["finetune", *map(str, argv)])


def test_cli_run_writes_curve_summary_and_checkpoint(tiny_train_model_dir, text_file, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    code = _run("--model", tiny_train_model_dir, "--data", text_file, "--method", "yarn", "--factor", 8, "--seq-len", 128,
                "--steps", 3, "--lr", "1e-3", "--warmup-steps", 1, "--output", out)
    assert code == 0
    assert "trainable parameters:" in capsys.readouterr().out
    assert [r["step"] for r in read_loss_csv(out / "loss.csv")] == [1, 2, 3]
    summary = json.loads((out / "training.json").read_text())
    assert summary["settings"]["method"] == "yarn" and summary["seq_len"] == 128
    AutoModelForCausalLM.from_pretrained(out)


def test_flags_override_the_recipe(tiny_train_model_dir, text_file, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"# ropescale finetune r.yaml\nmodel: {tiny_train_model_dir}\ndata: {text_file}\nmethod: linear\n"
                      "factor: 8\nsteps: 50\nlr: 1.0e-3\nwarmup_steps: 1\nseq_len: 64\n")
    out = tmp_path / "run"
    assert _run(recipe, "--steps", 2, "--method", "yarn", "--no-gradient-checkpointing", "--output", out) == 0
    settings = json.loads((out / "training.json").read_text())["settings"]
    assert (settings["steps"], settings["method"], settings["seq_len"]) == (2, "yarn", 64)
    assert settings["gradient_checkpointing"] is False and settings["lr"] == 1e-3


@pytest.mark.parametrize("argv,message", [
    (["--steps", "3"], "--output is required"),
    (["--steps", "0", "--output", "x"], "--steps must be a positive integer"),
    (["--schedule", "step", "--output", "x"], "--schedule: invalid choice"),
    (["--factor", "8", "--output", "x"], "--factor needs --method"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, tiny_train_model_dir, text_file, tmp_path, capsys,
                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run("--model", tiny_train_model_dir, "--data", text_file, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_recipe_key_exit_2(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 1.0e-4\n")
    assert _run(recipe, "--output", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "unknown recipe key 'learning_rate'" in err and "accepted keys" in err


def test_non_empty_output_exit_2(tmp_path, capsys):
    (tmp_path / "loss.csv").write_text("step\n")
    assert _run("--method", "yarn", "--factor", 8, "--output", tmp_path) == 2
    assert "pass --resume to continue its run or --overwrite" in capsys.readouterr().err


def test_help_lists_finetune(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "finetune" in capsys.readouterr().out
