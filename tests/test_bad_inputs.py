"""Every bad input gets one clear line on stderr and exit code 2, from the real CLI.

The cases run in-process through `ropescale.cli.main.main(argv)` with stderr captured at the file-descriptor
level (so transformers/accelerate log lines, warnings and tqdm bars would be seen too); a handful also run as real
`python -m ropescale` subprocesses to prove the boundary end to end. Each case names a distinctive piece of its
message: a vague or wrong message fails the test, not only a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ropescale.cli.main import main

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------------------------------------ inputs on disk

@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_lm_dir, tiny_train_model_dir):
    """Paths of bad (and a few good) inputs, built once; `{name}` placeholders in argv refer to them."""
    root = tmp_path_factory.mktemp("bad-inputs")
    p = {"model": str(tiny_lm_dir), "train_model": str(tiny_train_model_dir), "root": str(root)}

    def file(name, data: bytes | str):
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        p[name.replace(".", "_").replace("-", "_")] = str(path)
        return path

    p["missing"] = str(root / "no-such-model")
    (root / "no-config").mkdir()
    file("no-config/weights.bin", b"\0")
    p["no_config"] = str(root / "no-config")

    corrupt = root / "corrupt"
    shutil.copytree(tiny_lm_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"this is not a safetensors file")
    p["corrupt"] = str(corrupt)

    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        root / "gpt2")
    p["gpt2"] = str(root / "gpt2")

    longrope = root / "longrope"
    longrope.mkdir()
    config = json.loads((Path(tiny_lm_dir) / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 64,
                                 "short_factor": [1.0] * 3, "long_factor": [2.0] * 3}   # head_dim 16 needs 8
    (longrope / "config.json").write_text(json.dumps(config))
    p["longrope"] = str(longrope)

    for name, change in (("yarn-no-factor", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0,
                                                                   "original_max_position_embeddings": 64}}),
                         ("length-as-text", {"max_position_embeddings": "64"}),
                         ("length-negative", {"max_position_embeddings": -64,
                                              "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}),
                         ("method-as-list", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0,
                                                                 "factor": 2.0, "ropescale_method": ["yarn"]}}),
                         ("method-unknown", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0,
                                                                 "factor": 2.0, "ropescale_method": "yarm"}}),
                         ("rope-type-list", {"rope_parameters": {"rope_type": ["yarn"], "rope_theta": 10000.0,
                                                                 "factor": 2.0}})):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({**config, **change}))
        p[name.replace("-", "_")] = str(root / name)

    file("unknown-key.yaml", "method: yarn\nfactor: 8\nlearning_rate: 1.0e-4\n")
    file("wrong-type.yaml", "method: yarn\nfactor: 8\nsteps: many\n")
    file("bad-syntax.yaml", "method: yarn\nfactor: [8\n")
    file("list.yaml", "- method\n- yarn\n")
    file("empty.txt", "")
    file("blank.txt", "   \n\n  ")
    file("short.txt", "Just a few words.")
    file("latin1.txt", "caf\xe9 na\xefve".encode("latin-1"))
    file("no-text-field.jsonl", '{"content": "a document"}\n{"content": "another"}\n')
    file("bad-json.jsonl", '{"text": "fine"}\n{"text": \n')
    file("data.pdf", b"%PDF-1.4")
    file("a-file", "not a directory")
    file("results-corrupt.jsonl", '{"not": "a row"}\n{"also": "bad"}\n')
    file("results-empty.jsonl", "")

    nonempty = root / "nonempty"
    nonempty.mkdir()
    (nonempty / "notes.txt").write_text("someone's files")
    p["nonempty"] = str(nonempty)
    (root / "empty-run").mkdir()
    p["empty_run"] = str(root / "empty-run")
    p["results_dir"] = str(root)
    return p


@pytest.fixture(scope="module")
def foreign_checkpoint(tmp_path_factory, tiny_train_model_dir, make_tiny_model, text_file):
    """A run directory with a checkpoint written by fine-tuning one model (1 step at 32 tokens), and a second
    model with a different shape that must not resume from it."""
    root = tmp_path_factory.mktemp("foreign")
    run = root / "run"
    code = main(["finetune", "--model", str(tiny_train_model_dir), "--method", "linear", "--factor", "2",
                 "--steps", "1", "--warmup-steps", "0", "--save-every", "1", "--seq-len", "32",
                 "--data", str(text_file), "--output", str(run)])
    assert code == 0
    other = make_tiny_model(root / "other-model", seed=1, intermediate_size=48)
    return {"run": str(run), "other": str(other), "data": str(text_file)}


# ------------------------------------------------------------------------------------------------ the cases

# (id, argv with {placeholders}, distinctive substring of the message (case-insensitive))
CASES = [
    # spec flags
    ("unknown-method", ["extend", "--model", "{model}", "--method", "yarnn", "--output", "{root}/x"], "yarnn"),
    ("factor-0", ["extend", "--model", "{model}", "--method", "yarn", "--factor", "0", "--output", "{root}/x"],
     "factor must be >= 1 (1 = no scaling; the target length divided by the original), got 0.0"),
    ("factor-negative", ["eval", "perplexity", "--model", "{model}", "--method", "linear", "--factor", "-1",
                         "--output", "{root}/r.jsonl"],
     "factor must be >= 1 (1 = no scaling; the target length divided by the original), got -1.0"),
    ("factor-nan", ["extend", "--model", "{model}", "--method", "yarn", "--factor", "nan", "--output", "{root}/x"],
     "finite"),
    ("factor-word", ["extend", "--model", "{model}", "--method", "yarn", "--factor", "eight", "--output",
                     "{root}/x"], "'eight'"),
    ("factor-without-method", ["eval", "perplexity", "--model", "{model}", "--factor", "8", "--output",
                               "{root}/r.jsonl"], "needs --method"),
    ("knob-not-read-by-method", ["extend", "--model", "{model}", "--method", "linear", "--factor", "4",
                                 "--beta-fast", "32", "--output", "{root}/x"], "beta_fast"),
    ("plan-below-l0", ["plan", "--model", "{model}", "--target-length", "32"], "below the model's original"),
    ("plan-target-garbage", ["plan", "--model", "{model}", "--target-length", "long"],
     "--target-length: invalid int value: 'long'"),
    # models
    ("model-missing", ["extend", "--model", "{missing}", "--method", "yarn", "--factor", "2", "--output",
                       "{root}/x"], "does not exist (neither a local directory nor a Hub id"),
    ("model-no-config", ["eval", "perplexity", "--model", "{no_config}", "--output", "{root}/r.jsonl"],
     "no config.json"),
    ("model-is-file", ["plan", "--model", "{short_txt}", "--target-length", "1024"],
     "is a file; give a model directory, a .gguf file or a Hub id"),
    ("model-corrupt-weights", ["extend", "--model", "{corrupt}", "--method", "yarn", "--factor", "2", "--output",
                               "{root}/x"], "could not load the model"),
    ("model-without-rope", ["extend", "--model", "{gpt2}", "--method", "yarn", "--factor", "2", "--output",
                            "{root}/x"], "no rotary position embedding"),
    ("plan-model-without-rope", ["plan", "--model", "{gpt2}", "--target-length", "1024"],
     "no rotary position embedding"),
    ("config-transformers-refuses", ["export", "--model", "{yarn_no_factor}", "--to", "vllm"],
     "not a valid 'llama' config for transformers: KeyError"),
    ("config-length-as-text", ["plan", "--model", "{length_as_text}", "--target-length", "1024"],
     "expected int, got str"),
    ("config-length-negative", ["export", "--model", "{length_negative}", "--to", "hf"],
     "context length as -64; max_position_embeddings (and original_max_position_embeddings) must be an integer"),
    ("config-method-as-list", ["plan", "--model", "{method_as_list}", "--target-length", "1024"],
     "rope_parameters['ropescale_method'] must be a string naming a ropescale method (default, linear, ntk, "
     "dynamic, ntk-by-parts, yarn, dynamic-yarn, llama3, longrope, abf), got ['yarn']"),
    ("config-method-unknown", ["export", "--model", "{method_unknown}", "--to", "vllm"],
     "naming a ropescale method (default, linear, ntk, dynamic, ntk-by-parts, yarn, dynamic-yarn, llama3, "
     "longrope, abf), got 'yarm'"),
    ("extend-rope-type-list", ["extend", "--model", "{rope_type_list}", "--method", "yarn", "--factor", "2",
                               "--output", "{root}/x"], "rope_type ['yarn'] is not supported"),
    ("plan-head-dim-zero", ["plan", "--model", "{model}", "--target-length", "1024", "--head-dim", "0"],
     "--head-dim: expected a positive integer"),
    ("export-max-len-negative", ["export", "--model", "{model}", "--to", "vllm", "--max-len", "-5"],
     "--max-len: expected a positive integer, got '-5'"),
    ("longrope-wrong-length", ["export", "--model", "{longrope}", "--to", "vllm"], "short_factor"),
    # recipes
    ("recipe-unknown-key", ["finetune", "{unknown_key_yaml}", "--output", "{root}/run"], "learning_rate"),
    ("recipe-wrong-type", ["finetune", "{wrong_type_yaml}", "--output", "{root}/run"], "'steps' must be int"),
    ("recipe-bad-yaml", ["finetune", "{bad_syntax_yaml}", "--output", "{root}/run"], "not valid YAML"),
    ("recipe-not-mapping", ["finetune", "{list_yaml}", "--output", "{root}/run"], "mapping"),
    ("recipe-missing", ["finetune", "{root}/nope.yaml", "--output", "{root}/run"], "nope.yaml' does not exist"),
    # data
    ("corpus-empty", ["eval", "perplexity", "--model", "{model}", "--data", "{empty_txt}", "--output",
                      "{root}/r.jsonl"], "is an empty corpus: it holds no text"),
    ("corpus-blank", ["finetune", "--model", "{train_model}", "--data", "{blank_txt}", "--steps", "1",
                      "--output", "{root}/run-blank"], "holds only white space"),
    ("corpus-shorter-than-window", ["eval", "perplexity", "--model", "{model}", "--data", "{short_txt}",
                                    "--lengths", "64", "--output", "{root}/r.jsonl"], "shorter"),
    ("finetune-corpus-too-short", ["finetune", "--model", "{train_model}", "--data", "{short_txt}", "--steps", "1",
                                   "--seq-len", "32", "--output", "{root}/run-short"], "more text"),
    ("corpus-not-utf8", ["eval", "perplexity", "--model", "{model}", "--data", "{latin1_txt}", "--output",
                         "{root}/r.jsonl"], "; the corpus must be UTF-8"),
    ("jsonl-without-text-field", ["eval", "perplexity", "--model", "{model}", "--data", "{no_text_field_jsonl}",
                                  "--output", "{root}/r.jsonl"], "'text'"),
    ("jsonl-invalid-json", ["finetune", "--model", "{train_model}", "--data", "{bad_json_jsonl}", "--steps", "1",
                            "--output", "{root}/run-json"], "line 2"),
    ("data-unsupported-type", ["eval", "perplexity", "--model", "{model}", "--data", "{data_pdf}", "--output",
                               "{root}/r.jsonl"], ".pdf"),
    ("data-missing", ["eval", "perplexity", "--model", "{model}", "--data", "{root}/nope.txt", "--output",
                      "{root}/r.jsonl"], "path does not exist (expected"),
    # flags with bad values
    ("lengths-zero", ["eval", "perplexity", "--model", "{model}", "--lengths", "0,64"],
     "--lengths: expected a comma-separated list of positive integers, got '0,64': entry '0'"),
    ("lengths-garbage", ["eval", "perplexity", "--model", "{model}", "--lengths", "64,abc"], "'abc'"),
    ("lengths-empty", ["eval", "perplexity", "--model", "{model}", "--lengths", ","],
     "--lengths: expected a comma-separated list of positive integers, got ',': entry 1 is empty"),
    ("depths-out-of-range", ["eval", "passkey", "--model", "{model}", "--depths", "0,1.5"], "[0, 1]"),
    ("flag-not-for-task", ["eval", "perplexity", "--model", "{model}", "--depths", "0.5"], "--depths"),
    ("steps-zero", ["finetune", "--model", "{train_model}", "--steps", "0", "--output", "{root}/run"], "--steps"),
    ("seq-len-one", ["finetune", "--model", "{train_model}", "--seq-len", "1", "--output", "{root}/run"],
     "--seq-len must be an integer >= 2"),
    ("lr-negative", ["finetune", "--model", "{train_model}", "--lr", "-1", "--output", "{root}/run"], "lr"),
    ("passkey-share-one", ["finetune", "--model", "{train_model}", "--passkey-share", "1", "--output",
                           "{root}/run"], "--passkey-share must be a number in [0, 1)"),
    ("finetune-no-output", ["finetune", "--model", "{train_model}", "--steps", "1"], "--output"),
    ("resume-and-overwrite", ["finetune", "--model", "{train_model}", "--resume", "--overwrite", "--output",
                              "{root}/run"], "exclude"),
    ("prompt-file-missing", ["generate", "--model", "{model}", "--prompt-file", "{root}/nope.txt"], "not a file"),
    ("prompt-empty", ["generate", "--model", "{model}", "--prompt", ""], "prompt is empty"),
    ("top-p-zero", ["generate", "--model", "{model}", "--prompt", "hi", "--top-p", "0"], "--top-p"),
    ("filler-not-utf8", ["eval", "passkey", "--model", "{model}", "--filler", "{latin1_txt}", "--output",
                         "{root}/r.jsonl"], "; give a UTF-8 text file"),
    ("haystack-missing", ["eval", "needle", "--model", "{model}", "--haystack", "{root}/nope.txt", "--output",
                          "{root}/r.jsonl"], "nope.txt' does not exist"),
    ("unknown-command", ["extendd"], "extendd"),
    ("unknown-flag", ["eval", "perplexity", "--lenghts", "64"], "--lenghts"),
    ("missing-required-flag", ["plan", "--model", "{model}"], "--target-length is required"),
    # outputs
    ("extend-output-is-file", ["extend", "--model", "{model}", "--method", "yarn", "--factor", "2", "--output",
                               "{a_file}"], "is a file; give a directory path for the checkpoint"),
    ("finetune-output-is-file", ["finetune", "--model", "{train_model}", "--output", "{a_file}"],
     "is a file; give a directory for the run"),
    ("eval-output-is-dir", ["eval", "perplexity", "--model", "{model}", "--output", "{results_dir}"],
     "is a directory"),
    ("report-output-is-file", ["report", "{results_empty_jsonl}", "--output", "{a_file}"], "give a folder"),
    ("extend-output-not-empty", ["extend", "--model", "{model}", "--method", "yarn", "--factor", "2", "--output",
                                 "{nonempty}"], "exists and is not empty; pass --overwrite"),
    ("finetune-output-not-empty", ["finetune", "--model", "{train_model}", "--output", "{nonempty}"],
     "is not empty; pass --resume to continue its run or --overwrite"),
    ("finetune-overwrite-foreign-files", ["finetune", "--model", "{train_model}", "--overwrite", "--output",
                                          "{nonempty}"], "no ropescale run wrote"),
    ("resume-without-checkpoint", ["finetune", "--model", "{train_model}", "--resume", "--output", "{empty_run}"],
     "has no checkpoint"),
    ("export-config-without-hf", ["export", "--model", "{model}", "--to", "vllm", "--write-config"],
     "--write-config"),
    # results files
    ("eval-corrupt-results-file", ["eval", "perplexity", "--model", "{model}", "--output",
                                   "{results_corrupt_jsonl}"], "line 1"),
    ("report-missing-results", ["report", "{root}/nope.jsonl", "--output", "{root}/report"],
     "nope.jsonl' does not exist"),
    ("report-empty-results", ["report", "{results_empty_jsonl}", "--output", "{root}/report"], "no rows"),
]


def fill(argv: list[str], paths: dict[str, str]) -> list[str]:
    return [a.format(**paths) for a in argv]


def check_one_line(code: int, err: str, needle: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1, f"{len(lines)} stderr lines:\n{err}"
    assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, bad, capfd):
    _, argv, needle = case
    code = main(fill(argv, bad))
    out, err = capfd.readouterr()
    check_one_line(code, err, needle)
    assert "Traceback" not in out


def test_resume_from_another_models_checkpoint(foreign_checkpoint, capfd):
    capfd.readouterr()
    code = main(["finetune", "--model", foreign_checkpoint["other"], "--method", "linear", "--factor", "2",
                 "--steps", "2", "--warmup-steps", "0", "--save-every", "1", "--seq-len", "32", "--resume",
                 "--data", foreign_checkpoint["data"],
                 "--output", foreign_checkpoint["run"]])
    line = check_one_line(code, capfd.readouterr().err, "different run")
    assert "intermediate_size" in line


# cases that give the same bad input to two commands: one message is right for both
SAME_INPUT = {("model-without-rope", "plan-model-without-rope")}


def test_every_message_is_its_own():
    """No two cases expect the same message, and no expected message is part of another's, so a catch-all
    'invalid input' (or one message for two different mistakes) cannot pass; only cases that give one bad input
    to two commands (SAME_INPUT) expect the same message."""
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)
    needles = {name: needle.lower() for name, _, needle in CASES}
    same = {frozenset(pair) for pair in SAME_INPUT}
    for a, b in SAME_INPUT:
        assert needles[a] == needles[b], (a, b)
    repeated = [(a, b) for a in needles for b in needles
                if a != b and frozenset((a, b)) not in same and needles[a] in needles[b]]
    assert not repeated, repeated


# ------------------------------------------------------------------------------------------------ end to end

SUBPROCESS_CASES = ["unknown-method", "factor-word", "model-corrupt-weights", "recipe-unknown-key",
                    "finetune-corpus-too-short",
                    "corpus-not-utf8", "lengths-zero", "resume-without-checkpoint"]


@pytest.mark.integration
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_subprocess(name, bad):
    (_, argv, needle), = [c for c in CASES if c[0] == name]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ropescale", *fill(argv, bad)], capture_output=True, text=True,
                          env=env, timeout=120)
    check_one_line(proc.returncode, proc.stderr, needle)


@pytest.mark.integration
def test_a_command_that_succeeds_prints_only_its_own_lines(tmp_path, tiny_lm_dir):
    """No library chatter (DeepSpeed's 'Setting accelerator to CPU' went to stdout on machines without a GPU)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("DS_ACCELERATOR", None)
    proc = subprocess.run([sys.executable, "-m", "ropescale", "extend", "--model", str(tiny_lm_dir), "--method",
                           "yarn", "--factor", "2", "--output", str(tmp_path / "x")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote ") and "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
