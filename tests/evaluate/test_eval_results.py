"""The results schema and file: round trip, torn last line, corrupt lines, completed cells."""

import json

import pytest

from ropescale.evaluate.results import Result, ResultsFile, latest


def row(metric="nll", value=1.5, length=256, depth=None, **kw):
    fields = dict(model="m", method="yarn", factor=4.0, task="perplexity", length=length, depth=depth,
                  metric=metric, value=value, n=10, settings={"stride": None})
    fields.update(kw)
    return Result(**fields)


def test_round_trip_one_json_line_per_row(tmp_path):
    file = ResultsFile(tmp_path / "r.jsonl")
    rows = [row("nll"), row("perplexity", 4.48), row("accuracy", 0.5, task="passkey", depth=0.25)]
    file.append(rows)
    text = (tmp_path / "r.jsonl").read_text()
    assert text.count("\n") == 3 and all(json.loads(line)["model"] == "m" for line in text.splitlines())
    assert file.read() == rows


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "r.jsonl"
    file = ResultsFile(path)
    file.append([row("nll")])
    with open(path, "a") as handle:  # a kill in the middle of writing the next row
        handle.write(row("perplexity").to_json()[:40])
    assert [r.metric for r in file.read()] == ["nll"]
    file.append([row("bits_per_byte")])
    assert [r.metric for r in file.read()] == ["nll", "bits_per_byte"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_corrupt_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(row().to_json() + "\nnot json\n" + row().to_json() + "\n")
    with pytest.raises(ValueError, match="line 2"):
        ResultsFile(path).read()


def test_a_row_with_a_missing_field_is_rejected(tmp_path):
    record = json.loads(row().to_json())
    del record["metric"]
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="line 1.*metric"):
        ResultsFile(path).read()


def test_completed_groups_metrics_by_cell(tmp_path):
    file = ResultsFile(tmp_path / "r.jsonl")
    assert file.completed() == {}
    file.append([row("nll"), row("perplexity"), row("nll", length=512)])
    done = file.completed()
    assert done[row().cell_key()] == {"nll", "perplexity"}
    assert done[row(length=512).cell_key()] == {"nll"}
    assert row(settings={"stride": 256}).cell_key() not in done  # other settings: another cell


def test_latest_keeps_the_last_row_of_a_cell_metric():
    rows = latest([row(value=1.0), row(value=2.0), row("perplexity", 3.0)])
    assert sorted((r.metric, r.value) for r in rows) == [("nll", 2.0), ("perplexity", 3.0)]


def test_rows_written_as_short_context_read_as_the_clis_short_context_name(tmp_path):
    # rows written before the task took the CLI's name still count as done for `eval short-context`
    from ropescale.evaluate import ShortContextTask

    old = Result("m", "yarn", 2.0, "short_context", 64, None, "perplexity", 1.5, 10)
    path = tmp_path / "r.jsonl"
    path.write_text(old.to_json().replace('"short-context"', '"short_context"') + "\n")
    (row,) = ResultsFile(path).read()
    assert row.task == ShortContextTask.name == "short-context" and row.cell_key() == old.cell_key()
