from pathlib import Path

import pytest

from ropescale.train.config import FinetuneConfig

# fine-tune recipes; study-*.yaml are `ropescale study` recipes (tests/study/test_study_config.py loads them)
RECIPES = sorted(p for p in (Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml")
                 if not p.name.startswith("study-"))


def test_defaults_follow_the_yarn_paper():
    c = FinetuneConfig()
    assert (c.lr, c.weight_decay, c.warmup_steps, c.adam_beta2, c.max_grad_norm) == (2e-5, 0.0, 20, 0.95, 1.0)
    assert c.gradient_checkpointing


def test_unknown_key_names_it_and_the_accepted_keys():
    with pytest.raises(ValueError, match=r"unknown recipe key 'learning_rate'; accepted keys: .*\blr\b"):
        FinetuneConfig.from_dict({"learning_rate": 1e-4})


@pytest.mark.parametrize("key,value,expected", [
    ("steps", "ten", "must be int"), ("steps", 2.5, "must be int"), ("lr", "fast", "must be float"),
    ("gradient_checkpointing", "yes", "must be bool"), ("lora_targets", "q_proj", "must be a list of str"),
    ("steps", True, "must be int"), ("model", 3, "must be str or null"),
])
def test_wrong_type_names_key_and_type(key, value, expected):
    with pytest.raises(ValueError, match=rf"'{key}' {expected}"):
        FinetuneConfig.from_dict({key: value})


@pytest.mark.parametrize("key,value", [("steps", 0), ("lr", -1.0), ("schedule", "step"), ("report_to", "mlflow"),
                                       ("adam_beta2", 1.0), ("seq_len", 1), ("lora_targets", [])])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        FinetuneConfig.from_dict({key: value})


def test_int_is_accepted_for_float():
    assert FinetuneConfig(lr=1).lr == 1


def test_resume_and_overwrite_exclude_each_other():
    with pytest.raises(ValueError, match="resume and overwrite"):
        FinetuneConfig(resume=True, overwrite=True)


def test_yaml_recipe_overrides_and_pyyaml_floats(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# ropescale finetune r.yaml\nlr: 2e-5\nsteps: 10\nmethod: yarn\nfactor: 8\n")
    c = FinetuneConfig.from_yaml(path, steps=3)
    assert c.lr == 2e-5 and c.steps == 3 and c.method == "yarn" and c.factor == 8.0


@pytest.mark.parametrize("text,match", [("- a\n- b\n", "must be a mapping"), ("lr: [\n", "not valid YAML"),
                                        ("stepz: 3\n", "unknown recipe key 'stepz'")])
def test_bad_recipe_files(tmp_path, text, match):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        FinetuneConfig.from_yaml(path)


def test_missing_recipe(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        FinetuneConfig.from_yaml(tmp_path / "nope.yaml")


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"embedded-yarn-s8.yaml", "llama2-7b-yarn-64k.yaml", "mistral-7b-yarn-32k.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads_and_starts_with_its_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and "ropescale finetune" in first and path.name in first
    config = FinetuneConfig.from_yaml(path)
    assert config.method is not None and config.factor is not None and config.steps <= 1000


@pytest.mark.parametrize("values,match", [({"factor": 8.0}, "`factor` needs `method`"),
                                          ({"beta_fast": 16.0}, "`beta_fast` needs `method`"),
                                          ({"method": "yarnn"}, "method must be one of .*yarn")])
def test_spec_fields_are_checked_before_loading(values, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig.from_dict(values)


@pytest.mark.parametrize("name,config_dir,gib", [("llama3-8b-yarn-128k.yaml", "llama-3-8b", 30.3),
                                                 ("qwen2.5-7b-yarn-128k.yaml", "qwen2.5-7b-instruct", 39.3)])
def test_the_8_gpu_recipes_fit_80_gb_only_with_sequence_parallelism(name, config_dir, gib):
    """What the recipes' comments say `ropescale plan` predicts: with their Ulysses degree and ZeRO-3 (their launch
    command) a step fits 80 GB; one sequence per GPU does not at any ZeRO stage."""
    from dataclasses import replace

    from ropescale.memory_plan import GiB, TrainShape, estimate
    from ropescale.models import load_config

    root = Path(__file__).resolve().parents[2] / "recipes"
    recipe = FinetuneConfig.from_yaml(root / name)
    assert recipe.sequence_parallel > 1 and recipe.gradient_checkpointing
    model = load_config(str(root / "configs" / config_dir))
    assert model.max_position_embeddings * recipe.factor == recipe.seq_len
    shape = TrainShape(seq_len=recipe.seq_len, batch_size=recipe.batch_size, loss_chunk_size=recipe.loss_chunk_size,
                       gpus=8, zero_stage=3, sequence_parallel=recipe.sequence_parallel)
    assert estimate(model, shape, "cuda").total / GiB == pytest.approx(gib, abs=0.05)
    assert all(estimate(model, replace(shape, zero_stage=z, sequence_parallel=1), "cuda").total > 80 * GiB
               for z in range(4))
