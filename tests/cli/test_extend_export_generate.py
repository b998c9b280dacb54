"""`ropescale extend`, `export` and `generate` through the CLI entry point: outputs and one-line errors."""

import json

import pytest
import torch

from ropescale.cli.main import main
from ropescale.rope import RopeSpec

L0 = 64


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def _config_dir(tmp_path, spec, name="ckpt", **extra):
    """A checkpoint directory holding only config.json (export reads nothing else)."""
    from ropescale.export.hf import hf_config_keys

    path = tmp_path / name
    path.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, **extra}
    config.update(hf_config_keys(spec, 16, "llama"))
    (path / "config.json").write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------- extend: bad inputs, exit 2 and one line


def test_extend_refuses_a_non_empty_output_without_overwrite(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["extend", "--model", str(tiny_model_dir), "--method", "yarn", "--factor", "2",
                 "--output", str(tmp_path)]) == 2
    _one_line_error(capsys, "--overwrite", str(tmp_path))


def test_extend_output_that_is_a_file(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["extend", "--model", str(tiny_model_dir), "--method", "yarn", "--factor", "2",
                 "--output", str(tmp_path / "f")]) == 2
    _one_line_error(capsys, "is a file")


@pytest.mark.parametrize("setup,needle", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: d, "no config.json"),
])
def test_extend_bad_model_dirs(tmp_path, capsys, setup, needle):
    assert main(["extend", "--model", str(setup(tmp_path)), "--method", "yarn", "--factor", "2",
                 "--output", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, needle)


def test_extend_corrupted_weights(tiny_model_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["extend", "--model", str(broken), "--method", "yarn", "--factor", "2",
                 "--output", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "could not load the model")


def test_extend_gpt2_and_phi3_yarn_are_refused(tiny_model_dir, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.conftest import tiny_model

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(gpt2)
    tiny_model("phi3").save_pretrained(tmp_path / "phi3")
    capsys.readouterr()  # the saves' own progress output is not the CLI's
    assert main(["extend", "--model", str(gpt2), "--method", "yarn", "--factor", "2",
                 "--output", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "no rotary position embedding")
    phi3 = tmp_path / "phi3"
    assert main(["extend", "--model", str(phi3), "--method", "yarn", "--factor", "2",
                 "--output", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "'phi3' accepts only rope types default, longrope")
    assert not (tmp_path / "out").exists()


def test_extend_dynamic_yarn_says_it_needs_import_ropescale(tiny_model_dir, tmp_path, capsys):
    assert main(["extend", "--model", str(tiny_model_dir), "--method", "dynamic-yarn", "--factor", "4",
                 "--output", str(tmp_path / "dy")]) == 0
    assert "import ropescale" in capsys.readouterr().out
    from ropescale.models import load_model

    model = load_model(tmp_path / "dy")  # ropescale's loader installs the dynamic reset hook
    assert model.model.rotary_emb._ropescale_reset_hook is not None


# ---------------------------------------------------------------- export: schemas of the interop reference §5


YARN = RopeSpec(method="yarn", factor=8.0, original_max_position_embeddings=L0)


def test_export_vllm_override_is_the_whole_rope_dict(tmp_path, capsys):
    out = tmp_path / "vllm.json"
    assert main(["export", "--model", str(_config_dir(tmp_path, YARN)), "--to", "vllm", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    params = data["hf_overrides"]["rope_parameters"]
    assert params == {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                      "original_max_position_embeddings": L0}
    assert data["max_model_len"] == 512 and data["hf_overrides"]["max_position_embeddings"] == 512
    assert "--max-model-len 512" in printed and "--rope-scaling" not in printed and "--hf-overrides" in printed


def test_export_llamacpp_flags_and_gguf_keys(tmp_path, capsys):
    out = tmp_path / "l.json"
    assert main(["export", "--model", str(_config_dir(tmp_path, YARN)), "--to", "llamacpp", "--max-len", "300",
                 "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["gguf"]["llama.context_length"] == 300 and data["gguf"]["llama.rope.scaling.type"] == "yarn"
    assert data["flags"][:6] == ["--rope-scaling", "yarn", "--rope-scale", "8", "--yarn-orig-ctx", "64"]
    assert "llama-server -m model.gguf --rope-scaling yarn" in capsys.readouterr().out


@pytest.mark.parametrize("spec,target,lost", [
    (RopeSpec(method="dynamic", factor=4.0, original_max_position_embeddings=L0), "vllm", "statically"),
    (RopeSpec(method="dynamic-yarn", factor=4.0, original_max_position_embeddings=L0), "llamacpp", "static YaRN"),
    (RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=L0, truncate=False), "llamacpp",
     "truncate=False is lost"),
    (RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=L0, attention_factor=1.0), "llamacpp",
     "attention scale"),
    (RopeSpec(method="dynamic-yarn", factor=4.0, original_max_position_embeddings=L0), "hf", "import ropescale"),
])
def test_export_says_what_a_runtime_loses(tmp_path, capsys, spec, target, lost):
    assert main(["export", "--model", str(_config_dir(tmp_path, spec)), "--to", target]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lost:")]
    assert any(lost in line for line in lines), lines


def test_export_never_writes_types_llamacpp_aborts_on(tmp_path):
    for i, spec in enumerate([RopeSpec(method="dynamic", factor=4.0, original_max_position_embeddings=L0),
                              RopeSpec(method="llama3", factor=4.0, original_max_position_embeddings=L0,
                                       low_freq_factor=1.0, high_freq_factor=4.0)]):
        out = tmp_path / f"{i}.json"
        assert main(["export", "--model", str(_config_dir(tmp_path, spec, f"m{i}")), "--to", "llamacpp",
                     "--output", str(out)]) == 0
        assert json.loads(out.read_text())["gguf"]["llama.rope.scaling.type"] in ("none", "linear", "yarn",
                                                                                 "longrope")


def test_export_hf_rewrites_a_v5_only_config_with_both_schemas(tmp_path, capsys):
    path = tmp_path / "v5only"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 512,
        "rope_parameters": YARN.to_hf(16)}))
    assert main(["export", "--model", str(path), "--to", "hf", "--write-config"]) == 0
    config = json.loads((path / "config.json").read_text())
    assert config["rope_theta"] == 10000.0 and config["rope_scaling"]["rope_type"] == "yarn"
    legacy = {k: config[k] for k in ("rope_theta", "rope_scaling", "max_position_embeddings")}
    assert RopeSpec.from_hf(legacy) == YARN  # transformers 4.x reads these alone


@pytest.mark.parametrize("target", ["hf", "vllm", "llamacpp"])
def test_export_a_model_saved_without_l0(tmp_path, capsys, target):
    # an unscaled model (rope "default") and a Hub-style linear config carry no original_max_position_embeddings:
    # L0 is their max_position_embeddings, and the length served is L0 x factor
    out = tmp_path / "s.json"
    assert main(["export", "--model", "embedded", "--to", target, "--output", str(out)]) == 0
    assert json.loads(out.read_text())["max_len"] == 256
    path = tmp_path / "linear"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": L0,
        "rope_scaling": {"type": "linear", "factor": 4.0}}))
    assert main(["export", "--model", str(path), "--to", target, "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["max_len"] == 4 * L0
    if target == "vllm":
        assert data["hf_overrides"]["max_position_embeddings"] == L0  # vLLM multiplies it by the linear factor


def test_a_spec_file_without_l0_takes_the_models(tmp_path, capsys):
    spec = tmp_path / "lin.json"
    spec.write_text(json.dumps({"method": "linear", "factor": 4.0}))
    assert main(["plan", "--model", "embedded", "--spec", str(spec)]) == 0
    assert "1024 tokens = 4 x L0" in capsys.readouterr().out
    assert main(["export", "--model", "embedded", "--spec", str(spec), "--to", "vllm"]) == 0
    assert "--max-model-len 1024" in capsys.readouterr().out


def test_export_bad_inputs(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope"), "--to", "vllm"]) == 2
    _one_line_error(capsys, "does not exist")
    assert main(["export", "--model", str(_config_dir(tmp_path, YARN)), "--to", "vllm", "--write-config"]) == 2
    _one_line_error(capsys, "--write-config")


# ---------------------------------------------------------------- generate


def test_generate_prints_the_greedy_continuation(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from ropescale.cli.generate import continue_ids
    from ropescale.models import load_model

    prompt = tmp_path / "p.txt"
    prompt.write_text("To be, or not to be")
    argv = ["generate", "--model", str(tiny_model_dir), "--prompt-file", str(prompt), "--max-new-tokens", "8",
            "--method", "yarn", "--factor", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = load_model(tiny_model_dir)
    import ropescale as rs
    from ropescale.model_info import spec_for_model

    rs.apply(model, spec_for_model(model, "yarn", 4.0))
    ids = tokenizer("To be, or not to be", return_tensors="pt").input_ids
    expected = continue_ids(model, ids, 8, pad_token_id=tokenizer.pad_token_id)
    assert printed == tokenizer.decode(expected, skip_special_tokens=True)
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt-file", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, "--prompt-file")
    assert torch.is_tensor(expected)
