"""`ropescale study`: flags over the recipe, and bad input as one line with exit code 2."""

import argparse

import pytest

from ropescale.cli.main import main


def test_flags_override_the_recipe(tmp_path):
    from ropescale.cli.main import build_parser
    from ropescale.cli.study import config_from_args

    args = build_parser().parse_args(["study", "--output", str(tmp_path), "--factor", "8", "--lengths", "256,2048",
                                      "--methods", "yarn,ntk", "--steps", "5"])
    config = config_from_args(args)
    assert (config.factor, config.lengths, config.methods) == (8.0, (256, 2048), ("yarn", "ntk"))
    assert all(config.finetune_config(r).steps == 5 for r in config.runs)
    no_ft = config_from_args(argparse.Namespace(**{**vars(args), "no_finetune": True}))
    assert no_ft.runs == ()


def test_steps_replaces_the_steps_a_run_sets_itself(tmp_path):
    from ropescale.cli.main import build_parser
    from ropescale.cli.study import config_from_args

    recipe = tmp_path / "s.yaml"
    recipe.write_text("finetune: {steps: 40}\nruns: [{method: yarn, steps: 100}, {method: linear}]\n")
    args = build_parser().parse_args(["study", str(recipe), "--output", str(tmp_path / "o"), "--steps", "3"])
    assert [config_from_args(args).finetune_config(r).steps for r in config_from_args(args).runs] == [3, 3]
    args = build_parser().parse_args(["study", str(recipe), "--output", str(tmp_path / "o")])
    assert [config_from_args(args).finetune_config(r).steps for r in config_from_args(args).runs] == [100, 40]


@pytest.mark.parametrize("argv,message", [
    (["--output", "o", "--factor", "0.5"], "factor must be a number > 1"),
    (["--output", "o", "--methods", "yarn,rope"], "methods: 'rope' is not a method"),
    ([], "the following arguments are required: --output"),
])
def test_bad_flags_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_recipe_key_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "s.yaml"
    recipe.write_text("eval: {windows: 3}\n")
    assert main(["study", str(recipe), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown study recipe key 'eval.windows'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()   # nothing written before the recipe is valid
