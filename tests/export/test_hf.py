"""save_extended(): checkpoints that plain transformers (no ropescale import) loads to the same logits.

One subprocess, which never imports ropescale, loads every saved directory; its logits must equal the
in-memory patched model's to 1e-5 (fp32) on a sequence longer than L0.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import ropescale as rs
from ropescale.cli.main import main
from ropescale.export.hf import check_save_dir, hf_config_keys, save_extended
from ropescale.model_info import spec_for_model
from ropescale.rope import RopeSpec
from tests.conftest import TINY_ARCHS, tiny_model

SEQ = 100  # > L0 = 64
IDS = torch.randint(3, 97, (1, SEQ), generator=torch.Generator().manual_seed(0))
NATIVE = ["linear", "dynamic", "yarn", "llama3", "longrope", "ntk", "abf", "ntk-by-parts"]


def _fields(model, method):
    from ropescale.model_info import ModelInfo

    half = ModelInfo.from_config(model).rotary_dim // 2
    return {"llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
            "longrope": {"short_factor": [1.0 + 0.1 * i for i in range(half)],
                         "long_factor": [1.0 + 0.7 * i for i in range(half)]},
            "abf": {"rope_theta": 500000.0}}.get(method, {})


def _cases():
    for arch in TINY_ARCHS:
        for method in (["longrope", "ntk", "abf"] if arch == "phi3" else NATIVE):
            yield arch, method


CASES = list(_cases())

SUBPROCESS = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
dirs, ids, custom = json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2])), sys.argv[3]
out = {}
with torch.no_grad():
    for name, path in dirs.items():
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        torch.save(model(ids).logits, path + "/reloaded.pt")
    assert "ropescale" not in sys.modules, "the plain-transformers side imported ropescale"
    import ropescale  # transformers first, then ropescale: the dynamic_yarn type gets registered now
    model = AutoModelForCausalLM.from_pretrained(custom, attn_implementation="eager").eval()
    torch.save(model(ids).logits, custom + "/reloaded.pt")
print("ok")
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model_dir):
    """Every case saved with save_extended, one more through the real CLI, and one dynamic-yarn; reloaded in one
    subprocess. Returns {name: (in-memory logits, reloaded logits, directory)}."""
    root = tmp_path_factory.mktemp("extended")
    dirs, refs = {}, {}
    for arch, method in CASES:
        model = tiny_model(arch)
        spec = spec_for_model(model, method, 4.0, **_fields(model, method))
        rs.apply(model, spec)
        name = f"{arch}-{method}"
        dirs[name] = str(save_extended(model, None, spec, root / name))
        with torch.no_grad():
            refs[name] = model(IDS).logits
    # the real CLI, on a checkpoint directory with weights and tokenizer
    cli_dir = root / "cli-yarn"
    assert main(["extend", "--model", str(tiny_model_dir), "--method", "yarn", "--factor", "8",
                 "--output", str(cli_dir)]) == 0
    cli_model = rs.apply(tiny_model_dir_model(tiny_model_dir), rs.RopeSpec.from_hf(
        json.loads((cli_dir / "config.json").read_text())))
    dirs["cli-yarn"] = str(cli_dir)
    with torch.no_grad():
        refs["cli-yarn"] = cli_model(IDS).logits
    # ropescale's own type: needs `import ropescale` to load
    model = tiny_model("llama")
    spec = spec_for_model(model, "dynamic-yarn", 4.0)
    rs.apply(model, spec)
    custom = str(save_extended(model, None, spec, root / "llama-dynamic-yarn"))
    with torch.no_grad():
        refs["llama-dynamic-yarn"] = model(IDS).logits
    result = subprocess.run([sys.executable, "-c", SUBPROCESS, json.dumps(dirs), json.dumps(IDS.tolist()), custom],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    dirs["llama-dynamic-yarn"] = custom
    return {name: (refs[name], torch.load(f"{path}/reloaded.pt"), path) for name, path in dirs.items()}


def tiny_model_dir_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


@pytest.mark.parametrize("name", [f"{a}-{m}" for a, m in CASES] + ["cli-yarn", "llama-dynamic-yarn"])
def test_reloaded_without_ropescale_gives_the_same_logits(saved, name):
    in_memory, reloaded, _ = saved[name]
    assert reloaded.shape == (1, SEQ, in_memory.shape[-1])
    assert (in_memory - reloaded).abs().max() <= 1e-5


def test_saved_config_has_both_schemas_and_legacy_4x_reading_agrees(saved):
    for name, (_, _, path) in saved.items():
        config = json.loads(open(f"{path}/config.json").read())
        params = config["rope_parameters"]
        assert params["rope_type"] and "rope_theta" in params
        assert config["rope_scaling"] == {k: v for k, v in params.items() if k != "rope_theta"}
        assert config["rope_theta"] == params["rope_theta"]
        if params["rope_type"] in ("yarn", "llama3", "longrope", "dynamic_yarn"):
            assert params["original_max_position_embeddings"] == 64
        # transformers 4.x reads only the top-level keys: build the spec from those alone
        legacy = {k: config[k] for k in ("rope_theta", "rope_scaling", "max_position_embeddings",
                                         "partial_rotary_factor", "original_max_position_embeddings") if k in config}
        assert RopeSpec.from_hf(legacy) == RopeSpec.from_hf(config), name
        provenance = json.loads(open(f"{path}/ropescale.json").read())
        assert RopeSpec(**provenance["spec"]) == RopeSpec.from_hf(config)
        assert provenance["needs_ropescale"] == (params["rope_type"] == "dynamic_yarn")


def test_cli_checkpoint_is_complete(saved):
    from transformers import AutoTokenizer

    path = saved["cli-yarn"][2]
    AutoTokenizer.from_pretrained(path)
    names = {p.name for p in __import__("pathlib").Path(path).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "ropescale.json", "README.md"} <= names
    assert "import ropescale" in open(f"{saved['llama-dynamic-yarn'][2]}/README.md").read()


def test_hf_config_keys_refuse_a_dict_that_is_not_the_spec():
    spec = RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=64)
    with pytest.raises(ValueError, match="apply"):
        hf_config_keys(spec, 16, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})


def test_save_refuses_an_unpatched_model(tmp_path):
    with pytest.raises(ValueError, match="apply"):
        save_extended(tiny_model("llama"), None, RopeSpec(method="linear", factor=2.0), tmp_path / "out")


def test_output_dir_rules_and_atomic_replace(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_save_dir(tmp_path / "file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="`overwrite`"):
        check_save_dir(out)
    model = tiny_model("llama")
    spec = spec_for_model(model, "linear", 2.0)
    rs.apply(model, spec)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_extended(model, None, spec, out, overwrite=True)
    assert (out / "old.txt").read_text() == "old"  # the old checkpoint survives a failed save
    monkeypatch.undo()
    save_extended(model, None, spec, out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]  # no temp dirs left behind
