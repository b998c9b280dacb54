"""The report from a synthetic results file: PNGs, report.md, effective length."""

import pytest

from ropescale.evaluate.results import Result, ResultsFile
from ropescale.report import effective_length, write_report
from ropescale.cli.main import main
from ropescale.report.plots import read_loss_curve
from ropescale.report.tables import by_length, load_rows
from ropescale.train.checkpoint import LOSS_COLUMNS

L0 = 256
LENGTHS = [256, 512, 1024, 2048]
ROPES = {
    "default": {"method": "default", "rope_theta": 10000.0, "factor": 1.0, "partial_rotary_factor": 1.0},
    "yarn": {"method": "yarn", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": L0,
             "partial_rotary_factor": 1.0},
    "dynamic": {"method": "dynamic", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": L0,
                "partial_rotary_factor": 1.0},
}
# passkey accuracy per length for each method, split evenly over two depths
PASSKEY = {"default": {256: 1.0, 512: 0.5, 1024: 0.0, 2048: 0.0},
           "yarn": {256: 1.0, 512: 0.9, 1024: 0.5, 2048: 0.85},  # 2048 passes, but 1024 failed before it
           "dynamic": {256: 0.6, 512: 1.0, 1024: 1.0, 2048: 1.0}}  # the shortest fails


def result(method, task, length, metric, value, depth=None, n=10):
    rope = ROPES[method]
    return Result(model="embedded", method=method, factor=rope["factor"], task=task, length=length, depth=depth,
                  metric=metric, value=value, n=n, settings={"rope": rope, "dtype": "float32"},
                  extra={"original_length": L0, "head_dim": 64})


def synthetic_rows():
    rows = []
    for m, rope in ROPES.items():
        for i, n in enumerate(LENGTHS):
            ppl = 20.0 * (1 + i * (5 if m == "default" else 0.05))
            rows += [result(m, "perplexity", n, "perplexity", ppl), result(m, "perplexity", n, "bits_per_byte", ppl / 10),
                     result(m, "perplexity", n, "nll", 3.0)]
            acc = PASSKEY[m][n]
            for depth, a in ((0.0, min(1.0, 2 * acc)), (1.0, max(0.0, 2 * acc - 1.0))):  # mean over depths = acc
                rows += [result(m, "passkey", n, "accuracy", a, depth), result(m, "passkey", n, "key_bits_per_digit",
                                                                              3.3 * (1 - a), depth)]
                rows += [result(m, "needle", n, "accuracy", a, depth), result(m, "needle", n, "f1", a, depth)]
        if m != "default":
            rows += [result(m, "short_context", L0, "perplexity", 21.0), result(m, "short_context", L0,
                     "baseline_perplexity", 20.0), result(m, "short_context", L0, "relative_change", 0.05)]
    return rows


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultsFile(path).append(synthetic_rows())
    return path


def test_effective_length_needs_every_shorter_length_to_pass():
    assert effective_length(PASSKEY["yarn"]) == 512
    assert effective_length(PASSKEY["default"]) == 256
    assert effective_length(PASSKEY["dynamic"]) is None
    assert effective_length({256: 0.8, 512: 0.8}) == 512  # the threshold itself passes


def test_accuracy_by_length_averages_depths(results_file):
    rows = load_rows([results_file])
    acc = by_length(rows, "passkey", "accuracy")
    assert {k[1]: v for k, v in acc.items()}["yarn"] == pytest.approx(PASSKEY["yarn"])


def test_report_writes_the_figures_and_the_tables(results_file, tmp_path):
    out = tmp_path / "report"
    paths = write_report([results_file], out)
    names = sorted(p.name for p in paths)
    assert names == ["needle.png", "passkey.png", "perplexity.png", "report.md", "scaling.png"]
    for p in paths:
        assert p.stat().st_size > 1000
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    passkey = text.split("## Passkey retrieval")[1].split("\n\n")[2].splitlines()  # the accuracy table
    assert passkey[0].rstrip(" |").endswith("effective length")
    effective = {line.split("|")[1].strip(): line.rstrip(" |").split("|")[-1].strip() for line in passkey[2:]}
    assert effective == {"default": "256", "yarn ×8": "512", "dynamic ×8": "<256"}
    assert "256 (L0)" in text and "log2(10) = 3.32" in text and "every shorter evaluated length" in text
    assert "+5.00 %" in text
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_report_of_perplexity_only_writes_only_what_it_has(tmp_path):
    path = tmp_path / "p.jsonl"
    ResultsFile(path).append([r for r in synthetic_rows() if r.task == "perplexity"])
    names = sorted(p.name for p in write_report([path], tmp_path / "out"))
    assert names == ["perplexity.png", "report.md", "scaling.png"]


def test_missing_and_corrupt_files_are_errors(tmp_path, results_file):
    with pytest.raises(ValueError, match="does not exist"):
        write_report([tmp_path / "nope.jsonl"], tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n" + results_file.read_text())
    with pytest.raises(ValueError, match="line 1"):
        write_report([bad], tmp_path / "out")


# ---- loss.png from fine-tuning runs' loss.csv, through write_report and `ropescale report --loss-curve`


def loss_csv(path, losses):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(LOSS_COLUMNS)]
    rows += [f"{i + 1},{v},0.001,{128 * (i + 1)},{i * 0.5},1.0" for i, v in enumerate(losses)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_loss_curves_are_drawn_and_linked(results_file, tmp_path):
    curves = {"yarn": loss_csv(tmp_path / "runs/yarn/loss.csv", [5.0, 4.0, 3.5, 3.2]),
              "linear": loss_csv(tmp_path / "runs/linear/loss.csv", [5.0, 4.5, 4.2, 4.1])}
    paths = write_report([results_file], tmp_path / "report", loss_curves=curves, title="T", preface=["first line"])
    assert (tmp_path / "report" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "report" / "report.md").read_text()
    assert text.startswith("# T\n\nfirst line\n") and "![loss](loss.png)" in text
    assert len(paths) == 6


def test_read_loss_curve_and_its_errors(tmp_path):
    assert read_loss_curve(loss_csv(tmp_path / "a/loss.csv", [2.0, 1.0])) == ([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="does not exist"):
        read_loss_curve(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="has no step and loss columns"):
        read_loss_curve(tmp_path / "bad.csv")


def test_select_keeps_some_rows_only(results_file, tmp_path):
    write_report([results_file], tmp_path / "r", select=lambda row: row.method == "yarn")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| yarn ×8 |" in text and "| default |" not in text
    with pytest.raises(ValueError, match="hold no rows of this report"):
        write_report([results_file], tmp_path / "r2", select=lambda row: False)


def test_cli_report_loss_curve(results_file, tmp_path, capsys):
    curve = loss_csv(tmp_path / "runs/yarn/loss.csv", [3.0, 2.0])
    assert main(["report", str(results_file), "--output", str(tmp_path / "r"), "--loss-curve", str(curve)]) == 0
    assert str(tmp_path / "r" / "loss.png") in capsys.readouterr().out
