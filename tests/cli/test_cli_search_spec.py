"""`ropescale search` end to end on a tiny model, and `--spec FILE` wherever `--method/--factor` are: eval, extend,
finetune, export, plan, study."""

import json

import numpy as np
import pytest
import torch

from ropescale.cli.main import main
from ropescale.model_info import ModelInfo, build_spec
from ropescale.models import load_config
from ropescale.rope import RopeSpec


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _searched_spec(model_dir, factor=2.0, attention=1.3, seed=0) -> RopeSpec:
    """A longrope spec as search writes one: monotone per-pair factors in [1, 2s], a searched attention scale."""
    info = ModelInfo.from_config(load_config(str(model_dir)))
    pairs = info.rotary_dim // 2
    factors = np.sort(np.random.default_rng(seed).uniform(1.0, 2 * factor, pairs)).round(4)
    return RopeSpec(method="longrope", factor=factor, rope_theta=info.rope_theta,
                    original_max_position_embeddings=info.original_max_position_embeddings,
                    short_factor=[1.0] * pairs, long_factor=factors.tolist(), attention_factor=attention)


def _write(path, spec: RopeSpec):
    path.write_text(json.dumps(spec.record()))
    return path


# ---------------------------------------------------------------- search


def test_search_writes_generations_best_spec_and_plots(tiny_train_model_dir, tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["search", "--model", str(tiny_train_model_dir), "--factor", "4", "--output", str(out), "--generations",
            "2", "--population", "4", "--samples", "2", "--fitness", "perplexity"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "best.json" in said and "2 generations" in said
    assert all(f"{name} " in said for name in ("linear", "ntk", "yarn"))  # the seeds' scores, to compare with
    for name in ("search.json", "generation-0000.json", "generation-0001.json", "best.json", "history.csv",
                 "score.png", "factors.png"):
        assert (out / name).is_file(), name
    assert RopeSpec(**json.loads((out / "best.json").read_text())).method == "longrope"
    assert main(argv + ["--seed", "5"]) == 2
    _one_line_error(capsys, "--output", "other settings (seed: 0 there, 5 now)")


@pytest.mark.parametrize("extra,needle", [
    (["--factor", "1"], "--factor must be a number > 1"),
    (["--factor", "4", "--population", "3"], "--population must be an integer >= 4"),
    (["--factor", "4", "--fixed-attention-scale", "-1"], "--fixed-attention-scale must be > 0"),
    (["--factor", "4", "--max-factor", "2"], "--max-factor (2) must be >= --factor (4)"),
    (["--factor", "4", "--fitness", "bleu"], "--fitness: invalid choice"),
])
def test_search_bad_flags_are_one_line(tiny_train_model_dir, tmp_path, capsys, extra, needle):
    argv = ["search", "--model", str(tiny_train_model_dir), "--output", str(tmp_path / "s"), "--samples", "1"]
    assert main(argv + extra) == 2
    _one_line_error(capsys, needle)


# ---------------------------------------------------------------- --spec on every command


def test_eval_with_a_spec_file_equals_the_same_method_flags(tiny_lm_dir, text_file, tmp_path):
    spec = build_spec(ModelInfo.from_config(load_config(str(tiny_lm_dir))), "yarn", 2.0)
    common = ["eval", "perplexity", "--model", str(tiny_lm_dir), "--data", str(text_file), "--lengths", "128",
              "--max-windows", "1"]
    assert main(common + ["--spec", str(_write(tmp_path / "yarn.json", spec)), "--output",
                          str(tmp_path / "a.jsonl")]) == 0
    assert main(common + ["--method", "yarn", "--factor", "2", "--output", str(tmp_path / "b.jsonl")]) == 0
    values = [[json.loads(line)["value"] for line in (tmp_path / f).read_text().splitlines()]
              for f in ("a.jsonl", "b.jsonl")]
    assert values[0] == values[1]


def test_extend_a_searched_spec_round_trips_to_plain_transformers(tiny_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from ropescale.patch import apply

    spec = _searched_spec(tiny_lm_dir)
    out = tmp_path / "extended"
    assert main(["extend", "--model", str(tiny_lm_dir), "--spec", str(_write(tmp_path / "s.json", spec)),
                 "--output", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "longrope"
    assert saved["rope_parameters"]["long_factor"] == list(spec.long_factor)
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    patched = apply(AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval(), spec)
    unpatched = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    ids = torch.randint(3, 4000, (1, 100), generator=torch.Generator().manual_seed(0))  # past L0 = 64: long factors
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, patched(ids).logits)
        assert not torch.allclose(reloaded(ids).logits, unpatched(ids).logits)


def test_finetune_from_a_spec_file(tiny_train_model_dir, text_file, tmp_path):
    spec = _searched_spec(tiny_train_model_dir, factor=2.0)
    out = tmp_path / "run"
    assert main(["finetune", "--model", str(tiny_train_model_dir), "--spec", str(_write(tmp_path / "s.json", spec)),
                 "--steps", "1", "--warmup-steps", "0", "--data", str(text_file), "--output", str(out)]) == 0
    rope = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert rope["rope_type"] == "longrope" and rope["long_factor"] == list(spec.long_factor)
    assert rope["attention_factor"] == spec.attention_factor


def test_export_and_plan_read_a_spec_file(tiny_lm_dir, tmp_path, capsys):
    path = _write(tmp_path / "s.json", _searched_spec(tiny_lm_dir))
    assert main(["export", "--model", str(tiny_lm_dir), "--to", "llamacpp", "--spec", str(path)]) == 0
    said = capsys.readouterr().out
    assert "longrope" in said and "-c 128" in said
    assert main(["plan", "--model", str(tiny_lm_dir), "--spec", str(path)]) == 0
    said = capsys.readouterr().out
    assert "target     128 tokens = 2 x L0 with longrope" in said and '"rope_type": "longrope"' in said


def test_a_study_takes_spec_files_as_methods_and_runs(tiny_lm_dir, tmp_path):
    from ropescale.study import StudyConfig
    from ropescale.study.runner import training_free_targets

    path = str(_write(tmp_path / "searched.json", _searched_spec(tiny_lm_dir, factor=2.0)))
    config = StudyConfig.from_dict({"model": str(tiny_lm_dir), "factor": 2.0, "methods": ["yarn", path],
                                    "runs": [{"name": "searched", "spec": path}]})
    ft = config.finetune_config(config.runs[0])
    assert ft.spec == path and ft.method is None and ft.factor is None
    targets = training_free_targets(config, ModelInfo.from_config(load_config(str(tiny_lm_dir))))
    searched = [t for t in targets if t.spec is not None and t.spec.method == "longrope"]
    assert len(searched) == 1 and searched[0].label.endswith("[searched]")
    with pytest.raises(ValueError, match="has factor 2, the study's is 4"):
        StudyConfig.from_dict({"model": str(tiny_lm_dir), "factor": 4.0, "methods": [path], "runs": []})
    with pytest.raises(ValueError, match="method and spec exclude each other"):
        StudyConfig.from_dict({"factor": 2.0, "runs": [{"name": "x", "method": "yarn", "spec": path}]})


# ---------------------------------------------------------------- errors: one line, exit 2


COMMANDS = {
    "eval": ["eval", "perplexity", "--model", "{model}", "--output", "{tmp}/r.jsonl"],
    "extend": ["extend", "--model", "{model}", "--output", "{tmp}/x"],
    "finetune": ["finetune", "--model", "{model}", "--output", "{tmp}/run"],
    "export": ["export", "--model", "{model}", "--to", "vllm"],
    "plan": ["plan", "--model", "{model}"],
}


def _bad_files(tmp_path, model_dir):
    (tmp_path / "not.json").write_text("{nope")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "field.json").write_text(json.dumps({"method": "yarn", "factor": 2, "colour": "red"}))
    (tmp_path / "other.json").write_text(json.dumps({"colour": "red"}))   # read as plain RoPE before
    other = _searched_spec(model_dir).record()
    (tmp_path / "other_l0.json").write_text(json.dumps({**other, "original_max_position_embeddings": 4096}))
    return {"missing.json": "does not exist", "not.json": "is not a JSON file", "list.json": "JSON object",
            "field.json": "'colour' is not a RopeSpec field", "other.json": "holds neither a RopeSpec",
            "other_l0.json": "made for L0 = 4096", ".": "directory"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_spec_file_is_one_line(command, tiny_lm_dir, tmp_path, capsys):
    argv = [a.format(model=tiny_lm_dir, tmp=tmp_path) for a in COMMANDS[command]]
    for name, needle in _bad_files(tmp_path, tiny_lm_dir).items():
        assert main(argv + ["--spec", str(tmp_path / name)]) == 2, name
        err = _one_line_error(capsys, needle)
        assert "--spec" in err, err


@pytest.mark.parametrize("command,flags,needle", [
    ("eval", ["--method", "yarn"], "not allowed with argument"),
    ("eval", ["--factor", "2"], "--spec and --factor exclude each other"),
    ("eval", ["--beta-fast", "16"], "--spec and --beta-fast exclude each other"),
    ("extend", ["--method", "yarn"], "not allowed with argument"),
    ("finetune", ["--method", "yarn"], "--spec and --method exclude each other"),
    ("finetune", ["--factor", "2"], "--spec and --factor exclude each other"),
    ("plan", ["--method", "yarn"], "not allowed with argument"),
    ("plan", ["--target-length", "256"], "--spec and --target-length exclude each other"),
])
def test_spec_and_method_flags_exclude_each_other(command, flags, needle, tiny_lm_dir, tmp_path, capsys):
    path = _write(tmp_path / "s.json", _searched_spec(tiny_lm_dir))
    argv = [a.format(model=tiny_lm_dir, tmp=tmp_path) for a in COMMANDS[command]]
    assert main(argv + ["--spec", str(path)] + flags) == 2
    _one_line_error(capsys, needle)


@pytest.mark.parametrize("device,needle", [
    ("nosuch", "'nosuch' is not a torch device"),
    ("cuda", "'cuda': CUDA is not available on this machine"),
    ("cuda:7", "'cuda:7'"),
    ("mps", "'mps': MPS is not available on this machine"),
])
@pytest.mark.parametrize("command", ["eval", "search", "study"])
def test_a_device_this_machine_lacks_is_one_line(tiny_train_model_dir, tmp_path, capsys, device, needle, command):
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    model = ["--model", str(tiny_train_model_dir)]
    if command == "eval":
        argv = ["eval", "perplexity", *model, "--lengths", "32", "--output", str(tmp_path / "r.jsonl"),
                "--device", device]
    elif command == "search":
        argv = ["search", *model, "--factor", "2", "--output", str(tmp_path / "s"), "--device", device]
    else:
        recipe = tmp_path / "study.yaml"
        recipe.write_text(f"eval: {{device: '{device}'}}\nruns: []\n")
        argv = ["study", str(recipe), *model, "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    _one_line_error(capsys, "device" if command == "study" else "--device", needle)
    assert not (tmp_path / "s" / "search.json").exists() and not (tmp_path / "o").exists()
