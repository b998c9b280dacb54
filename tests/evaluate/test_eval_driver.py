"""The shared driver: resume without recomputing, interrupted runs, short-context baseline."""

import pytest

from ropescale.evaluate import PasskeyTask, PerplexityTask, ResultsFile, ShortContextTask, evaluate
from ropescale.model_info import spec_for_model


class Counting:
    """Wrap a task and count measure() calls per cell; optionally fail after `fail_after` cells."""

    def __init__(self, task, fail_after=None):
        self.task, self.calls, self.fail_after = task, [], fail_after
        self.name, self.metrics = task.name, task.metrics

    def settings(self):
        return self.task.settings()

    def cells(self, subject):
        return self.task.cells(subject)

    def prepare(self, model, tokenizer, subject):
        self.task.prepare(model, tokenizer, subject)

    def measure(self, model, tokenizer, cell):
        self.calls.append(cell)
        return self.task.measure(model, tokenizer, cell)


def test_rerun_recomputes_nothing(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    out = tmp_path / "r.jsonl"
    first = Counting(PasskeyTask(lengths=[128, 160], depths=[0.0, 1.0], trials=1))
    evaluate(first, model, tokenizer=tokenizer, output=out, progress=False)
    assert len(first.calls) == 4
    again = Counting(PasskeyTask(lengths=[128, 160], depths=[0.0, 1.0], trials=1))
    assert evaluate(again, model, tokenizer=tokenizer, output=out, progress=False) == []
    assert again.calls == []
    more = Counting(PasskeyTask(lengths=[128, 160], depths=[0.0, 1.0], trials=2))  # other settings: other cells
    evaluate(more, model, tokenizer=tokenizer, output=out, progress=False)
    assert len(more.calls) == 4


def test_an_interrupted_run_resumes_after_the_finished_cells(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    out = tmp_path / "r.jsonl"

    class Interrupt(Exception):
        pass

    def stop_after_two(cell, rows, seen=[]):  # noqa: B006 - counts across calls on purpose
        seen.append(cell)
        if len(seen) == 2:
            raise Interrupt

    task = Counting(PerplexityTask(lengths=[16, 32, 48, 64], max_windows=1))
    with pytest.raises(Interrupt):
        evaluate(task, model, tokenizer=tokenizer, output=out, progress=False, on_cell=stop_after_two)
    assert [c.length for c in task.calls] == [16, 32]
    assert sorted({r.length for r in ResultsFile(out).read()}) == [16, 32]
    resumed = Counting(PerplexityTask(lengths=[16, 32, 48, 64], max_windows=1))
    evaluate(resumed, model, tokenizer=tokenizer, output=out, progress=False)
    assert [c.length for c in resumed.calls] == [48, 64]


def test_a_cell_with_missing_metrics_is_redone(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    out = tmp_path / "r.jsonl"
    evaluate(PerplexityTask(lengths=[16], max_windows=1), model, tokenizer=tokenizer, output=out, progress=False)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n")  # the third metric's row never made it to disk
    task = Counting(PerplexityTask(lengths=[16], max_windows=1))
    evaluate(task, model, tokenizer=tokenizer, output=out, progress=False)
    assert len(task.calls) == 1


def test_all_done_does_not_load_the_model(tiny_lm_dir, tmp_path, monkeypatch):
    import ropescale.models

    out = tmp_path / "r.jsonl"
    task = PerplexityTask(lengths=[16], max_windows=1)
    evaluate(task, str(tiny_lm_dir), output=out, progress=False)
    monkeypatch.setattr(ropescale.models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    assert evaluate(task, str(tiny_lm_dir), output=out, progress=False) == []


def test_short_context_compares_with_the_model_without_the_spec(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    plain = evaluate(PerplexityTask(lengths=[64], max_windows=2), model, tokenizer=tokenizer,
                     output=tmp_path / "p.jsonl", progress=False)
    spec = spec_for_model(model, "yarn", 4.0)
    rows = evaluate(ShortContextTask(max_windows=2), model, tokenizer=tokenizer, spec=spec,
                    output=tmp_path / "r.jsonl", progress=False)
    values = {r.metric: r.value for r in rows}
    assert {r.length for r in rows} == {64} and {r.task for r in rows} == {"short-context"}
    assert values["baseline_perplexity"] == pytest.approx(next(r.value for r in plain if r.metric == "perplexity"))
    assert values["relative_change"] == pytest.approx(values["perplexity"] / values["baseline_perplexity"] - 1)
    assert values["perplexity"] != values["baseline_perplexity"]  # yarn's attention scale changes L0 too


def test_short_context_without_a_baseline_is_an_error(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="`baseline_model`"):
        evaluate(ShortContextTask(), model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", progress=False)


@pytest.mark.parametrize("device,needle", [("nosuch", "is not a torch device"), ("meta", "is not supported")])
def test_a_device_torch_cannot_run_on_is_refused_before_anything_is_read(tmp_path, device, needle):
    out = tmp_path / "r.jsonl"
    with pytest.raises(ValueError, match=f"`device` '{device}' {needle}"):
        evaluate(PerplexityTask(lengths=[64]), str(tmp_path / "no-model"), output=out, device=device, progress=False)
    assert not out.exists()
