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


A_STUDY = {"o/results.jsonl": b""}   # a study folder (of an earlier invocation) for the run-folder cases


@pytest.mark.parametrize("files,message", [
    ({"s.yaml": b"eval: null\n"}, "eval must be a mapping of EvalSettings keys"),
    ({"s.yaml": b"eval: [max_tokens]\n"}, "eval must be a mapping of EvalSettings keys"),
    ({"s.yaml": b"methods: {a: 1}\n"}, "methods must be a list of method names or RopeSpec JSON files"),
    ({"s.yaml": b"runs: null\n"}, "runs must be a list of fine-tune runs"),
    ({"s.yaml": b"runs: 5\n"}, "runs must be a list of fine-tune runs"),
    ({"s.yaml": b"runs: [{method: 5}]\n"}, "runs[0].method must be one of default, linear"),
    ({"s.yaml": b"runs: [{spec: 5}]\n"}, "runs[0].spec must be the path of a RopeSpec JSON file"),
    ({"s.yaml": b"eval: {ruler_tasks: [[x]]}\n"}, "eval.ruler_tasks must be null or a non-empty list of niah_"),
    ({"s.yaml": "model: caf\xe9\n".encode("latin-1")}, "s.yaml' is not UTF-8 text"),
    ({"o/notes.md": b"mine"}, "holds files that no ropescale study wrote (no results.jsonl or study.json); "
                              "choose another --output"),
    ({"o/study.yaml": b"factor: 8\n"}, "holds files that no ropescale study wrote"),   # a recipe of one's own
    ({**A_STUDY, "o/runs": b"x"}, "runs' is a file, not the study's folder of fine-tune runs"),
    ({**A_STUDY, "o/runs/yarn/weights.bin": b"x"}, "runs/yarn' holds files that no ropescale fine-tune wrote"),
    ({**A_STUDY, "o/runs/yarn/training.json": b"{not json"}, "is not the training.json of a ropescale fine-tune"),
    ({**A_STUDY, "o/runs/yarn/training.json": b"[1]"}, "is not the training.json of a ropescale fine-tune"),
    ({**A_STUDY, "o/runs/yarn/training.json": b'{"settings": {"steps": 7}}'}, "fine-tune run 'yarn' in"),
    ({**A_STUDY, "o/measured.json": b"[1]"}, "measured.json' is not the record of a ropescale study"),
])
def test_a_bad_recipe_or_output_folder_is_one_line_before_any_work(files, message, tmp_path, capsys):
    files = {"s.yaml": b"runs: [{method: yarn}]\n", **files}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["study", str(tmp_path / "s.yaml"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before   # nothing written
