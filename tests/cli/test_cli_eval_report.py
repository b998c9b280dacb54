"""`ropescale eval` and `ropescale report` from the command line: runs, resumes, and one-line errors."""

import json

import pytest

from ropescale.cli.main import main


def one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("lengths", ["0", "abc", "256,-1", ""])
def test_bad_lengths_exit_2(capsys, lengths, tmp_path):
    one_line_error(capsys, ["eval", "perplexity", "--lengths", lengths, "--output", str(tmp_path / "r.jsonl")],
                   "--lengths")


def test_bad_depths_and_stray_flags_exit_2(capsys, tmp_path):
    out = ["--output", str(tmp_path / "r.jsonl")]
    one_line_error(capsys, ["eval", "passkey", "--depths", "0,1.5"] + out, "--depths")
    one_line_error(capsys, ["eval", "perplexity", "--trials", "3"] + out, "--trials", "perplexity")
    one_line_error(capsys, ["eval", "passkey", "--filler", str(tmp_path / "none.txt")] + out, "--filler")
    one_line_error(capsys, ["eval", "unknown-task"] + out, "unknown-task")


def test_eval_runs_resumes_and_reports(capsys, tiny_lm_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    filler = tmp_path / "bees.txt"
    filler.write_text("Bees hum over the old stone wall.")
    base = ["--model", str(tiny_lm_dir), "--output", str(out)]
    assert main(["eval", "perplexity", "--lengths", "32,64", "--max-windows", "2"] + base) == 0
    assert main(["eval", "perplexity", "--lengths", "32,64", "--max-windows", "2", "--stride", "16"] + base) == 0
    assert main(["eval", "passkey", "--lengths", "128", "--n-depths", "2", "--trials", "2", "--filler", str(filler),
                 "--method", "yarn", "--factor", "2"] + base) == 0
    assert main(["eval", "short-context", "--method", "linear", "--factor", "2", "--max-windows", "2"] + base) == 0
    capsys.readouterr()
    assert main(["eval", "perplexity", "--lengths", "32,64", "--max-windows", "2"] + base) == 0
    assert "nothing to do" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["task"] for r in rows} == {"perplexity", "passkey", "short-context"}
    assert len([r for r in rows if r["task"] == "perplexity"]) == 2 * 2 * 3  # two strides, two lengths
    passkey = [r for r in rows if r["task"] == "passkey"]
    assert {r["settings"]["filler"] for r in passkey} == {str(filler)} and {r["method"] for r in passkey} == {"yarn"}
    report = tmp_path / "report"
    assert main(["report", str(out), "--output", str(report)]) == 0
    assert {p.name for p in report.iterdir()} == {"perplexity.png", "passkey.png", "scaling.png", "report.md"}
    assert "(stride 16)" in (report / "report.md").read_text()  # the two perplexity runs are told apart


def test_report_bad_inputs_exit_2(capsys, tmp_path):
    one_line_error(capsys, ["report", str(tmp_path / "missing.jsonl")], "missing.jsonl", "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "m"}\nnot json at all\n')
    one_line_error(capsys, ["report", str(bad), "--output", str(tmp_path / "out")], "line 1")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_line_error(capsys, ["report", str(empty), "--output", str(tmp_path / "out")], "no rows")


def test_eval_refuses_a_corrupt_results_file_before_working(capsys, tmp_path):
    bad = tmp_path / "r.jsonl"
    bad.write_text("garbage\n{}\n")
    one_line_error(capsys, ["eval", "perplexity", "--output", str(bad)], "line 1")


def test_eval_ruler_runs_qa_from_a_file_and_says_in_one_line_what_it_skips(capsys, tiny_lm_dir, tmp_path):
    from tests.qa_files import write_hotpotqa

    base = ["eval", "ruler", "--model", str(tiny_lm_dir), "--lengths", "256", "--samples", "1",
            "--output", str(tmp_path / "r.jsonl")]
    assert main(base + ["--tasks", "niah_single_1,qa_1,qa_2", "--qa-file", write_hotpotqa(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "ruler: qa_1 skipped: no --qa-file (SQuAD JSON for qa_1, HotpotQA JSON for qa_2)"
    rows = {r["metric"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert rows["qa_1"]["n"] == 0 and rows["qa_2"]["n"] == 1 and rows["average"]["extra"]["skipped"] == ["qa_1"]
    one_line_error(capsys, base + ["--qa-file", str(tmp_path / "none.json")], "--qa-file", "does not exist")
