"""StudyConfig: recipes load, the embedded recipe is the default, and every bad key is named."""

from pathlib import Path

import pytest

from ropescale.study import StudyConfig
from ropescale.study.config import FinetuneRun

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_the_embedded_recipe_is_the_default():
    assert StudyConfig.from_yaml(RECIPES / "study-embedded.yaml") == StudyConfig()


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("study-*.yaml")))
def test_every_study_recipe_loads_and_says_how_to_run_it(name):
    path = RECIPES / name
    config = StudyConfig.from_yaml(path, output="somewhere")
    assert path.read_text().startswith(f"# ropescale study recipes/{name}")
    assert config.output == "somewhere" and (config.runs or config.methods)   # something to compare
    for run in config.runs:   # each run is a complete FinetuneConfig with the study's model, method and factor
        ft = config.finetune_config(run, output="x")
        if "spec" in run.settings:   # a spec file holds method and factor
            assert (ft.model, ft.spec, ft.method, ft.factor) == (config.model, run.settings["spec"], None, None)
            assert config.spec_of(ft.spec, "runs").factor == config.factor
        else:
            assert (ft.model, ft.method, ft.factor) == (config.model, run.method, config.factor)
        assert ft.steps == config.finetune["steps"]   # the same step budget for every run


def test_llama2_recipe_launches_finetuning_on_gpus():
    config = StudyConfig.from_yaml(RECIPES / "study-llama2-7b.yaml")
    assert config.launcher[:2] == ("accelerate", "launch") and config.eval.dtype == "bfloat16"
    assert [r.name for r in config.runs] == ["yarn", "linear", "yarn-pose"]


def _write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("factr: 8\n", "unknown study recipe key 'factr'"),
    ("eval: {trials: 3}\n", "unknown study recipe key 'eval.trials'"),
    ("finetune: {learning_rate: 1.0e-4}\n", "unknown recipe key 'learning_rate'"),
    ("runs: [{method: yarn, pose: 64}]\n", "runs[yarn]: unknown recipe key 'pose'"),
    ("runs: [{name: a}]\n", "runs[0] needs a method"),
    ("runs: [{method: yarm}]\n", "method must be one of"),
    ("methods: [yarn, pi]\n", "methods: 'pi' is not a method"),
    ("factor: 1\n", "factor must be a number > 1"),
    ("lengths: [256, 1]\n", "lengths must be a non-empty list of integers >= 2"),
    ("eval: {passkey_depths: [0.5, 2]}\n", "eval.passkey_depths must be a non-empty list of numbers in [0, 1]"),
    ("eval: {passkey_lengths: []}\n", "eval.passkey_lengths must be null or a non-empty list of integers >= 2"),
    ("eval: {dtype: fp8}\n", "eval.dtype must be one of float32, bfloat16, float16"),
    ("finetune: {method: yarn}\n", "finetune: key 'method' is set by the study"),
    ("runs: [{method: yarn, output: x}]\n", "runs[yarn]: key 'output' is set by the study"),
    ("runs: [{method: yarn}, {method: yarn}]\n", "two runs are named 'yarn'"),
    ("finetune: {steps: 0}\n", "steps must be a positive integer"),
    ("- just a list\n", "must be a mapping"),
    ("eval: null\n", "eval must be a mapping of EvalSettings keys"),
    ("eval: [1]\n", "eval must be a mapping of EvalSettings keys"),
    ("methods: {yarn: 1}\n", "methods must be a list of method names"),
    ("methods: [[yarn]]\n", "methods must be a list of method names"),
    ("runs: null\n", "runs must be a list of fine-tune runs"),
    ("runs: 5\n", "runs must be a list of fine-tune runs"),
    ("runs: [{method: 5}]\n", "runs[0].method must be one of"),
    ("runs: [{method: [yarn]}]\n", "runs[0].method must be one of"),
    ("eval: {ruler_tasks: [[vt]]}\n", "eval.ruler_tasks must be null or a non-empty list of"),
    ("eval: {ruler_models: [[baseline]]}\n", "eval.ruler_models must be a list of"),
])
def test_recipe_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ValueError) as err:
        StudyConfig.from_yaml(_write(tmp_path, text))
    assert message in str(err.value) and "study.yaml" in str(err.value)


def test_a_recipe_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.yaml' is not UTF-8 text"):
        StudyConfig.from_yaml(path)


def test_the_recorded_recipe_of_a_spec_run_loads_back(tmp_path, monkeypatch):
    import yaml

    from ropescale.study.runner import _plain

    monkeypatch.chdir(RECIPES.parent)   # the recipe names its spec file from the repository's root
    config = StudyConfig.from_yaml(RECIPES / "study-embedded-s8.yaml")
    assert any("spec" in run.settings for run in config.runs)
    assert StudyConfig.from_dict(config.to_dict()) == config
    path = _write(tmp_path, yaml.safe_dump(_plain(config.to_dict())))
    assert StudyConfig.from_yaml(path) == config


def test_missing_recipe_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        StudyConfig.from_yaml(tmp_path / "nope.yaml")


def test_run_names_default_from_the_method_and_strategy():
    config = StudyConfig(runs=[{"method": "yarn"}, {"method": "yarn", "pose_window": 128}, {"method": "linear"}])
    assert [r.name for r in config.runs] == ["yarn", "yarn-pose", "linear"]
    assert config.runs[1] == FinetuneRun("yarn-pose", "yarn", {"pose_window": 128})


def test_shared_settings_then_run_settings(tmp_path):
    config = StudyConfig.from_yaml(_write(tmp_path, "finetune: {steps: 7, lr: 1e-3, seq_len: 512}\n"
                                                    "runs: [{name: short, method: yarn, seq_len: 256}]\n"))
    ft = config.finetune_config(config.runs[0], output=tmp_path / "run")
    assert (ft.steps, ft.lr, ft.seq_len, ft.save_every) == (7, 1e-3, 256, 1)   # YAML's 1e-3 string read as a float
    assert ft.output == str(tmp_path / "run")


def test_the_recorded_recipe_loads_back_to_the_same_config(tmp_path):
    import yaml

    from ropescale.study.runner import _plain

    config = StudyConfig.from_yaml(RECIPES / "study-llama2-7b.yaml")
    path = _write(tmp_path, yaml.safe_dump(_plain(config.to_dict())))
    assert StudyConfig.from_yaml(path) == config


PROBES = sorted((RECIPES.parent / "docs" / "ruler").glob("*/*.yaml"))


@pytest.mark.parametrize("path", PROBES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_documented_probe_loads_and_names_its_own_command(path):
    """docs/ruler's probes are commands a reader reruns: each must still load, and its header must run itself."""
    rel = path.relative_to(RECIPES.parent).as_posix()
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert f"ropescale study {rel} --output " in header
    config = StudyConfig.from_yaml(path, output="somewhere")
    for run in config.runs:
        config.finetune_config(run, output="x")   # every run's keys are FinetuneConfig fields
