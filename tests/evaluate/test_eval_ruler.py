"""RULER through the driver: one row per task and length, the average once a length is complete, skipped tasks
named, resumable, an oracle scores 1, and every output in the samples file."""

import pytest
import torch

from ropescale.data import ruler
from ropescale.evaluate import RulerTask, evaluate
from ropescale.evaluate.samples import SamplesFile

from test_eval_passkey import OracleLM


def test_rows_per_task_and_length_and_the_average_of_the_tasks_that_fit(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    task = RulerTask(lengths=[256, 320], tasks=["niah_single_1", "vt", "niah_multiquery"], samples=2)
    rows = evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", progress=False)
    by = {(r.length, r.metric): r for r in rows}
    assert set(by) == {(n, m) for n in (256, 320) for m in ("niah_single_1", "vt", "niah_multiquery", "average")}
    skipped = by[(256, "niah_multiquery")]
    assert skipped.n == 0 and "needs at least" in skipped.extra["skipped"]  # 4 queried keys need ~290 tokens
    assert by[(256, "average")].extra == {**by[(256, "average")].extra, "tasks": ["niah_single_1", "vt"],
                                           "skipped": ["niah_multiquery"]}
    assert by[(256, "average")].value == pytest.approx((by[(256, "niah_single_1")].value + by[(256, "vt")].value) / 2)
    assert all(r.task == "ruler" and r.depth is None and 0.0 <= r.value <= 1.0 for r in rows)
    assert evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", progress=False) == []


def test_an_average_missing_after_a_kill_is_written_without_measuring_again(tiny_lm, tmp_path):
    from ropescale.evaluate import ResultsFile

    model, tokenizer = tiny_lm
    task = RulerTask(lengths=[256], tasks=["niah_single_1", "vt"], samples=1)
    out = ResultsFile(tmp_path / "r.jsonl")
    evaluate(task, model, tokenizer=tokenizer, output=out, progress=False)
    rows = out.read()
    out.path.write_text("".join(r.to_json() + "\n" for r in rows if r.metric != "average"))
    again = evaluate(task, model, tokenizer=tokenizer, output=out, progress=False)
    assert [r.metric for r in again] == ["average"]


def test_an_oracle_scores_one_on_every_task_and_its_outputs_are_logged(lm_tokenizer, tmp_path):
    names = ["niah_single_1", "niah_multikey_2", "niah_multivalue", "vt"]
    task = RulerTask(lengths=[512], tasks=names, samples=3)
    hay = ruler.Haystacks(essay=task._essay, keys="eval")
    script = {}
    for name in names:
        for i in range(3):
            s = ruler.ruler_sample(lm_tokenizer, name, 512, i, 3, 0, hay)
            script[tuple(s.prompt_ids)] = s.answer_ids + lm_tokenizer.encode("\n", add_special_tokens=False)
    oracle = OracleLM(script, len(lm_tokenizer))
    rows = evaluate(task, oracle, tokenizer=lm_tokenizer, output=tmp_path / "r.jsonl", samples=tmp_path / "s.jsonl",
                    progress=False)
    assert {r.metric: r.value for r in rows} == {**{n: 1.0 for n in names}, "average": 1.0}
    logged = SamplesFile(tmp_path / "s.jsonl").read()
    assert len(logged) == 12 and all(r["correct"] and r["score"] == 1.0 for r in logged)
    vt = next(r for r in logged if r["metric"] == "vt")
    assert all(name in vt["output"] for name in vt["expected"]) and len(vt["expected"]) == 5


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="`tasks` must be RULER task names"):
        RulerTask(tasks=["niah_single_9"])
    with pytest.raises(ValueError, match="`qa_files` '/nope.json' does not exist"):
        RulerTask(tasks=["qa_1"], qa_files=["/nope.json"])
    with pytest.raises(ValueError, match="`samples` must be >= 1, got 0"):
        RulerTask(samples=0)
    with pytest.raises(ValueError, match="`chat_template` must be auto or none"):
        RulerTask(chat_template="yes")


def test_qa_tasks_without_their_file_are_skipped_and_run_with_it(tiny_lm, tmp_path):
    from tests.qa_files import write_squad

    model, tokenizer = tiny_lm
    task = RulerTask(lengths=[256], tasks=["niah_single_1", "qa_1", "qa_2"], samples=1)
    assert task.without_file() == ["qa_1", "qa_2"]
    rows = {r.metric: r for r in evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "a.jsonl",
                                          progress=False)}
    assert rows["qa_1"].n == 0 and "needs a squad file" in rows["qa_1"].extra["skipped"]
    assert rows["average"].extra["skipped"] == ["qa_1", "qa_2"] and rows["average"].n == 1
    with_file = RulerTask(lengths=[256], tasks=["qa_1"], samples=2, qa_files=[write_squad(tmp_path / "squad.json")])
    assert with_file.without_file() == [] and with_file.settings()["qa_files"] == {"squad": str(tmp_path / "squad.json")}
    (row, average) = evaluate(with_file, model, tokenizer=tokenizer, output=tmp_path / "b.jsonl", progress=False)
    assert row.metric == "qa_1" and row.n == 2 and average.value == row.value


def test_two_files_of_one_dataset_are_refused(tmp_path):
    from tests.qa_files import write_squad

    with pytest.raises(ValueError, match="`qa_files` holds two squad files"):
        RulerTask(qa_files=[write_squad(tmp_path / "a.json"), write_squad(tmp_path / "b.json")])
