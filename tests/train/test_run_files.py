"""The run directory's files survive a kill at any byte: loss.csv rows cut short are dropped on resume."""

from ropescale.io import read_loss_csv
from ropescale.train.checkpoint import LOSS_COLUMNS, LossLog


def _rows(steps):
    return "".join(f"{s},{1.0 / s:.6f},1e-05,{32 * s},{0.1 * s:.3f},0.5\n" for s in steps)


def test_resume_drops_rows_after_the_checkpoint_and_a_torn_last_row(tmp_path):
    for torn in ("1", "12,0.08", "12,0.083333,1e-05,384,1.200,0.5"):   # cut inside the step, mid-row, no newline
        path = tmp_path / "loss.csv"
        path.write_text(",".join(LOSS_COLUMNS) + "\n" + _rows(range(1, 12)) + torn, encoding="utf-8")
        log = LossLog(tmp_path, resume_step=10)
        log.write({"step": 11, "loss": "0.5", "lr": "1e-05", "tokens": 352, "elapsed_s": "1.1", "grad_norm": "0.4"})
        log.close()
        rows = read_loss_csv(path)
        assert [r["step"] for r in rows] == list(range(1, 12)), torn
        assert rows[-1]["loss"] == 0.5


def test_resume_with_a_torn_header_keeps_a_valid_file(tmp_path):
    path = tmp_path / "loss.csv"
    path.write_text("step,lo", encoding="utf-8")
    LossLog(tmp_path, resume_step=3).close()
    assert path.read_text(encoding="utf-8").splitlines() == [",".join(LOSS_COLUMNS)]
    assert read_loss_csv(path) == []
