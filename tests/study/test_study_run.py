"""run_study end to end on a tiny random Llama (L0 = 64, the embedded tokenizer): files, report, resume."""

import dataclasses
import json
import sys

import pytest

from ropescale.study import StudyConfig, run_study
from ropescale.io import read_loss_csv


def tiny_study(model_dir, text_file, output, **overrides):
    values = dict(
        output=str(output), model=str(model_dir), model_label="tiny", factor=2.0, lengths=[64, 128],
        methods=["linear", "yarn"],
        eval={"data": str(text_file), "max_tokens": 128, "passkey_trials": 1, "passkey_depths": [0.5],
              "ruler_samples": 0},
        finetune={"data": str(text_file), "steps": 2, "seq_len": 128, "lr": 1e-3, "warmup_steps": 1,
                  "gradient_checkpointing": False, "save_every": 1},
        runs=[{"name": "yarn", "method": "yarn"}, {"name": "linear", "method": "linear"}])
    values.update(overrides)
    return StudyConfig(**values)


def stages(output):
    return {s["stage"]: s for s in json.loads((output / "study.json").read_text())["stages"]}


def headline(report):
    """The report's first table: its header cells and the first cell of every row."""
    lines = report.read_text().splitlines()
    assert lines[0].startswith("# ropescale study: tiny, L0 = 64") and lines[1] == ""
    table = [line for line in lines[2:] if line.startswith("|")]
    assert lines[2] == table[0]   # the table opens the report, right under the title
    table = table[: next(i for i, line in enumerate(lines[2:]) if not line.startswith("|"))]
    return [c.strip() for c in table[0].strip("|").split("|")], [line.strip("|").split("|")[0].strip()
                                                                 for line in table[2:]]


def test_training_free_study_writes_results_report_and_figures(tiny_lm_dir, text_file, tmp_path):
    out = tmp_path / "study"
    report = run_study(tiny_study(tiny_lm_dir, text_file, out, runs=[]), progress=False, log=lambda _: None)
    assert report == out / "report.md"
    header, rows = headline(report)
    assert header == ["model / method", "64 (L0)", "128 (2×L0)", "passkey (mean)", "key bits/digit",
                      "effective length", "fine-tune steps", "fine-tune time"]
    assert rows == ["default (no scaling)", "linear ×2", "yarn ×2"]
    assert "## Findings" in report.read_text() and "the unscaled model scores" in report.read_text()
    for name in ("perplexity.png", "passkey.png", "scaling.png", "results.jsonl", "study.yaml"):
        assert (out / name).stat().st_size > 100
    assert not (out / "loss.png").exists()
    # passkey needs ~100 tokens: measured at 128 only; perplexity at both lengths, for 3 models
    measured = {(json.loads(line)["task"], json.loads(line)["length"]) for line in open(out / "results.jsonl")}
    assert measured == {("perplexity", 64), ("perplexity", 128), ("passkey", 128)}
    assert stages(out)["baseline"]["cells_measured"] == 3 and stages(out)["training-free"]["cells_measured"] == 6


def test_a_study_runs_ruler_on_the_stages_it_names_and_keeps_every_output(tiny_lm_dir, text_file, tmp_path):
    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out, runs=[], lengths=[256], eval={
        "data": str(text_file), "max_tokens": 512, "passkey_trials": 1, "passkey_depths": [0.5],
        "ruler_samples": 1, "ruler_tasks": ["niah_single_1", "vt"], "ruler_models": ["baseline"],
        "log_samples": True})
    report = run_study(config, progress=False, log=lambda _: None)
    header, rows = headline(report)
    assert "RULER (mean)" in header and "RULER effective length" in header
    ruler = [json.loads(line) for line in open(out / "results.jsonl") if json.loads(line)["task"] == "ruler"]
    assert {(r["model"], r["metric"]) for r in ruler} == {("tiny", m) for m in ("niah_single_1", "vt", "average")}
    samples = [json.loads(line) for line in open(out / "results.samples.jsonl")]
    assert {s["task"] for s in samples} == {"passkey", "ruler"} and all("output" in s for s in samples)
    assert "## RULER" in report.read_text()


def test_passkey_lengths_restrict_the_passkey_grid_to_some_of_the_lengths(tiny_lm_dir, text_file, tmp_path):
    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out, runs=[], methods=["yarn"], lengths=[64, 128, 256], eval={
        "data": str(text_file), "max_tokens": 256, "passkey_trials": 1, "passkey_depths": [0.5],
        "passkey_lengths": [128], "ruler_samples": 0})
    run_study(config, progress=False, log=lambda _: None)
    measured = {(json.loads(line)["task"], json.loads(line)["length"]) for line in open(out / "results.jsonl")}
    assert {n for task, n in measured if task == "passkey"} == {128}
    assert {n for task, n in measured if task == "perplexity"} == {64, 128, 256}
    with pytest.raises(ValueError, match=r"eval.passkey_lengths \[512\] must be some of the study's lengths"):
        run_study(dataclasses.replace(config, eval=dataclasses.replace(config.eval, passkey_lengths=(512,))),
                  progress=False, log=lambda _: None)


@pytest.mark.integration
def test_full_tiny_study_then_a_rerun_recomputes_nothing(tiny_lm_dir, text_file, tmp_path, monkeypatch):
    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out)
    lines = []
    run_study(config, progress=False, log=lines.append)
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [
        "[1/5] baseline", "[2/5] training-free", "[3/5] fine-tune", "[4/5] fine-tuned", "[5/5] report"]
    assert lines[-1] == f"report: {out / 'report.md'}"
    header, rows = headline(out / "report.md")
    assert rows == ["default (no scaling)", "linear ×2", "yarn ×2", "yarn ×2 fine-tuned", "linear ×2 fine-tuned"]
    text = (out / "report.md").read_text()
    assert "After 2 steps" in text and "Short context" in text and "![loss](loss.png)" in text
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    for run in ("yarn", "linear"):
        assert [r["step"] for r in read_loss_csv(out / "runs" / run / "loss.csv")] == [1, 2]
    done = stages(out)
    assert done["fine-tune"]["steps_trained"] == 4 and done["fine-tune"]["runs"] == {"yarn": "trained",
                                                                                     "linear": "trained"}
    assert done["fine-tuned"]["cells_measured"] == 2 * 3 + 2   # 2 runs × (2 perplexity + 1 passkey) + short-context

    before = (out / "results.jsonl").read_bytes()
    mtimes = {run: (out / "runs" / run / "training.json").stat().st_mtime_ns for run in ("yarn", "linear")}

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished study loaded a model or trained again")

    import ropescale.models
    import ropescale.train.loop

    monkeypatch.setattr(ropescale.models, "load_model", forbidden)
    monkeypatch.setattr(ropescale.train.loop, "finetune", forbidden)
    run_study(config, progress=False, log=lambda _: None)
    assert (out / "results.jsonl").read_bytes() == before
    assert {run: (out / "runs" / run / "training.json").stat().st_mtime_ns for run in mtimes} == mtimes
    again = stages(out)
    assert sum(s["cells_measured"] + s["steps_trained"] for s in again.values()) == 0
    assert again["fine-tune"]["runs"] == {"yarn": "reused", "linear": "reused"}
    assert headline(out / "report.md")[1] == rows

    # the yarn run trained again: the rows of its earlier checkpoint go, and it is measured again
    monkeypatch.undo()
    import shutil

    def rows_of(label):
        return [line for line in open(out / "results.jsonl") if json.loads(line)["model"] == label]

    first = rows_of("yarn (fine-tuned)")
    shutil.rmtree(out / "runs" / "yarn")
    log = []
    run_study(config, progress=False, log=log.append)
    assert stages(out)["fine-tune"]["runs"] == {"yarn": "trained", "linear": "reused"}
    assert any("result rows of another checkpoint dropped" in line for line in log)
    assert stages(out)["fine-tuned"]["cells_measured"] == 3 + 1   # yarn's grid and short-context, not linear's
    assert len(rows_of("yarn (fine-tuned)")) == len(first) and rows_of("yarn (fine-tuned)") != first


@pytest.mark.integration
def test_an_interrupted_finetune_resumes_from_its_checkpoint(tiny_lm_dir, text_file, tmp_path, monkeypatch):
    import ropescale.train.loop

    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out, runs=[{"name": "yarn", "method": "yarn"}])
    real = ropescale.train.loop.finetune

    def killed_after_one_step(ft, **kwargs):
        def stop(step):
            raise KeyboardInterrupt

        return real(ft, on_step=stop)

    monkeypatch.setattr(ropescale.train.loop, "finetune", killed_after_one_step)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, progress=False, log=lambda _: None)
    assert not (out / "runs" / "yarn" / "training.json").exists()
    monkeypatch.setattr(ropescale.train.loop, "finetune", real)
    lines = []
    run_study(config, progress=False, log=lines.append)
    assert "  yarn: resuming from step 1 of 2" in lines
    training = json.loads((out / "runs" / "yarn" / "training.json").read_text())
    assert training["resumed_from_step"] == 1 and training["steps"] == 2
    assert [r["step"] for r in read_loss_csv(out / "runs" / "yarn" / "loss.csv")] == [1, 2]
    done = stages(out)
    assert done["baseline"]["cells_measured"] == 0 and done["training-free"]["cells_measured"] == 0
    assert done["fine-tune"] == {**done["fine-tune"], "steps_trained": 1, "runs": {"yarn": "resumed"}}

    changed = dataclasses.replace(config, finetune={**config.finetune, "steps": 3})
    with pytest.raises(ValueError, match="was trained with steps 2 \\(the recipe now says 3\\)"):
        run_study(changed, progress=False, log=lambda _: None)


@pytest.mark.integration
def test_a_launcher_runs_the_finetune_in_a_subprocess(tiny_lm_dir, text_file, tmp_path):
    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out, methods=[], runs=[{"name": "yarn", "method": "yarn"}],
                        launcher=[sys.executable])
    run_study(config, progress=False, log=lambda _: None)
    recipe = (out / "runs" / "yarn.finetune.yaml").read_text()
    assert recipe.startswith(f"# {sys.executable} -m ropescale finetune THIS") and "method: yarn" in recipe
    assert json.loads((out / "runs" / "yarn" / "training.json").read_text())["steps"] == 2
    assert stages(out)["fine-tuned"]["cells_measured"] == 4


def test_a_folder_of_foreign_files_or_of_another_models_study_is_refused_before_any_work(tiny_lm_dir, text_file,
                                                                                         tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("my notes")
    with pytest.raises(ValueError, match="holds files that no ropescale study wrote"):
        run_study(tiny_study(tiny_lm_dir, text_file, out), progress=False, log=lambda _: None)
    (out / "results.jsonl").write_text("")
    (out / "runs" / "yarn").mkdir(parents=True)
    (out / "runs" / "yarn" / "weights.bin").write_text("not a run")
    with pytest.raises(ValueError, match="runs/yarn' holds files that no ropescale fine-tune wrote"):
        run_study(tiny_study(tiny_lm_dir, text_file, out), progress=False, log=lambda _: None)
    (out / "study.yaml").write_text("model: some-org/another-model\n")
    with pytest.raises(ValueError, match="holds a study of model 'some-org/another-model'"):
        run_study(tiny_study(tiny_lm_dir, text_file, out, runs=[]), progress=False, log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["notes.md", "results.jsonl", "runs", "study.yaml"]
    assert (out / "study.yaml").read_text() == "model: some-org/another-model\n"


def test_a_device_this_machine_lacks_is_named_before_the_model_is_read(text_file, tmp_path):
    config = tiny_study(tmp_path / "no-model", text_file, tmp_path / "out", eval={"device": "nosuch"})
    with pytest.raises(ValueError, match="eval.device 'nosuch' is not a torch device"):
        run_study(config, progress=False, log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"settings": 5}'])
def test_a_run_whose_training_json_is_not_ropescales_is_named(tiny_lm_dir, text_file, tmp_path, text):
    from ropescale.study.runner import finetune_run

    config = tiny_study(tiny_lm_dir, text_file, tmp_path / "study")
    run_dir = tmp_path / "study" / "runs" / "yarn"
    run_dir.mkdir(parents=True)
    (run_dir / "training.json").write_text(text)
    with pytest.raises(ValueError, match="training.json' is not the training.json of a ropescale fine-tune run"):
        finetune_run(config, config.runs[0], run_dir, log=lambda _: None)


def test_rows_of_a_run_whose_checkpoint_changed_since_they_were_measured_are_measured_again(
        tiny_lm_dir, text_file, tmp_path):
    import shutil

    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out, methods=[], runs=[{"name": "yarn", "method": "yarn"}])
    run_dir = out / "runs" / "yarn"
    shutil.copytree(tiny_lm_dir, run_dir)   # a finished run of an earlier invocation: weights and training.json
    (out / "results.jsonl").write_text("")
    settings = config.finetune_config(config.runs[0], output=run_dir).to_dict()

    def finish(elapsed_s):   # what a training writes last; its wall time alone tells two trainings apart
        (run_dir / "training.json").write_text(json.dumps({"settings": settings, "steps": 2, "elapsed_s": elapsed_s}))

    def rows():
        return [line for line in open(out / "results.jsonl") if json.loads(line)["model"] == "yarn (fine-tuned)"]

    finish(1.0)
    run_study(config, progress=False, log=lambda _: None)
    first = rows()
    assert stages(out)["fine-tuned"]["cells_measured"] == 3 + 1   # perplexity at 64 and 128, passkey, short-context
    run_study(config, progress=False, log=lambda _: None)
    assert stages(out)["fine-tuned"]["cells_measured"] == 0
    # trained again by hand, or by a study killed before it measured the new weights: the old rows go
    finish(2.0)
    log = []
    run_study(config, progress=False, log=log.append)
    assert stages(out)["fine-tune"]["runs"] == {"yarn": "reused"}
    assert stages(out)["fine-tuned"]["cells_measured"] == 3 + 1
    assert f"  yarn (fine-tuned): {len(first)} result rows of another checkpoint dropped (they are measured again)" \
        in log
    assert len(rows()) == len(first) and not set(rows()) & set(first)


def test_a_study_stopped_before_its_first_result_is_continued_not_refused(tiny_lm_dir, text_file, tmp_path):
    from ropescale.study.runner import open_study

    out = tmp_path / "study"
    config = tiny_study(tiny_lm_dir, text_file, out, runs=[])
    open_study(config, False, lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["study.json", "study.yaml"]
    open_study(config, False, lambda _: None)   # no "holds files that no ropescale study wrote"
