"""`ropescale methods` and `ropescale plan`, end to end through the CLI entry point."""

import json
from pathlib import Path

import pytest

from ropescale.cli.main import main
from ropescale.rope import METHODS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-2-7b"


def _rope_parameters(out: str) -> dict:
    line = next(line for line in out.splitlines() if line.strip().startswith('"rope_parameters":'))
    return json.loads(line.split(":", 1)[1])


def test_methods_lists_all_ten(capsys):
    assert main(["methods"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == list(METHODS)


def test_plan_on_the_example_prints_a_yarn_dict_with_factor_16(capsys):
    assert main(["plan", "--model", str(EXAMPLE), "--target-length", "65536", "--method", "yarn"]) == 0
    out = capsys.readouterr().out
    assert _rope_parameters(out) == {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0,
                                     "original_max_position_embeddings": 4096}
    assert '"max_position_embeddings": 65536' in out and "--max-model-len 65536" in out
    assert "--rope-scaling yarn --rope-scale 16 --yarn-orig-ctx 4096 -c 65536" in out
    assert "21 unchanged, 18 divided by 16" in out  # the YaRN paper's Llama-2 ramp (20, 46)


def test_plan_reuses_l0_of_an_already_scaled_model(tmp_path, capsys):
    config = json.loads((EXAMPLE / "config.json").read_text())
    config.update(max_position_embeddings=131072, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["plan", "--model", str(tmp_path), "--target-length", "262144", "--method", "llama3"]) == 0
    params = _rope_parameters(capsys.readouterr().out)
    assert params["factor"] == 32.0 and params["original_max_position_embeddings"] == 8192
    assert params["rope_theta"] == 500000.0 and params["high_freq_factor"] == 4.0


def test_plan_reads_gpt_neox_rotary_names_and_prints_the_gguf_arch(tmp_path, capsys):
    neox = tmp_path / "neox"
    neox.mkdir()
    (neox / "config.json").write_text(json.dumps({
        "model_type": "gpt_neox", "hidden_size": 512, "num_attention_heads": 8, "num_hidden_layers": 2,
        "intermediate_size": 2048, "vocab_size": 1000, "max_position_embeddings": 2048,
        "rotary_pct": 0.25, "rotary_emb_base": 50000}))
    assert main(["plan", "--model", str(neox), "--target-length", "8192", "--method", "yarn"]) == 0
    out = capsys.readouterr().out
    assert _rope_parameters(out)["rope_theta"] == 50000.0
    assert "gptneox.rope.dimension_count = 16" in out  # a quarter of head_dim 64
    mistral = tmp_path / "mistral"
    mistral.mkdir()
    config = json.loads((EXAMPLE / "config.json").read_text())
    (mistral / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    assert main(["plan", "--model", str(mistral), "--target-length", "8192", "--method", "yarn"]) == 0
    out = capsys.readouterr().out
    assert "llama.rope.scaling.type" in out and "mistral.rope" not in out


@pytest.mark.parametrize("argv,needle", [
    (["--target-length", "1000"], "--target-length"),
    (["--target-length", "8192", "--method", "abf"], "--rope-theta"),
    (["--target-length", "8192", "--method", "longrope"], "longrope"),
    (["--target-length", "8192", "--method", "nope"], "--method"),
])
def test_plan_user_errors_are_one_line_exit_2(argv, needle, capsys):
    assert main(["plan", "--model", str(EXAMPLE), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_plan_on_a_missing_directory_exits_2(tmp_path, capsys):
    assert main(["plan", "--model", str(tmp_path / "missing"), "--target-length", "8192"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model" in err and "missing" in err


def test_plan_hub_failure_is_one_line(monkeypatch, capsys):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert main(["plan", "--model", "some-org/some-model", "--target-length", "8192"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "some-org/some-model" in err and "Hub" in err
