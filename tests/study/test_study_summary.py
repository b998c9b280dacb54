"""The headline table and the findings, from synthetic rows whose numbers are known."""

import pytest

from ropescale.evaluate.results import Result
from ropescale.study.summary import Entry, collect, findings, headline_table, evaluated_target_length

L0, LENGTHS, FACTOR = 256, [256, 512, 1024], 4
ENTRIES = [Entry("default (no scaling)", "base", "default", 1.0, "baseline"),
           Entry("linear ×4", "base", "linear", 4.0, "training-free"),
           Entry("yarn ×4", "base", "yarn", 4.0, "training-free"),
           Entry("yarn ×4 fine-tuned", "ft-yarn", "yarn", 4.0, "fine-tuned", steps=20, seconds=125.0),
           Entry("linear ×4 fine-tuned", "ft-linear", "linear", 4.0, "fine-tuned", steps=20, seconds=130.0),
           Entry("yarn ×4 fine-tuned (PoSE 256)", "ft-pose", "yarn", 4.0, "fine-tuned", steps=20, seconds=30.0,
                 strategy="PoSE 256")]
BPB = {"default (no scaling)": [2.0, 3.0, 5.0], "linear ×4": [2.6, 2.6, 2.7], "yarn ×4": [2.02, 2.05, 2.1],
       "yarn ×4 fine-tuned": [2.01, 1.95, 1.9], "linear ×4 fine-tuned": [2.3, 2.2, 2.15],
       "yarn ×4 fine-tuned (PoSE 256)": [2.03, 2.0, 1.98]}
# passkey accuracy per length at two depths (mean = the value)
PASSKEY = {"default (no scaling)": [1.0, 0.5, 0.0], "linear ×4": [0.5, 0.5, 0.5], "yarn ×4": [1.0, 1.0, 0.5],
           "yarn ×4 fine-tuned": [1.0, 1.0, 1.0], "linear ×4 fine-tuned": [1.0, 1.0, 0.0],
           "yarn ×4 fine-tuned (PoSE 256)": [1.0, 0.5, 0.5]}
SHORT = {"yarn ×4 fine-tuned": 0.012, "linear ×4 fine-tuned": 0.08, "yarn ×4 fine-tuned (PoSE 256)": -0.004}


def _row(entry, task, length, metric, value, depth=None, n=4):
    return Result(model=entry.model, method=entry.method, factor=entry.factor, task=task, length=length, depth=depth,
                  metric=metric, value=value, n=n, extra={"original_length": L0})


def rows():
    out = []
    for e in ENTRIES:
        for n, bpb, acc in zip(LENGTHS, BPB[e.name], PASSKEY[e.name]):
            out += [_row(e, "perplexity", n, "bits_per_byte", bpb, n=1000),
                    _row(e, "perplexity", n, "perplexity", 2 ** (3 * bpb), n=1000)]
            for d, a in ((0.0, min(1, 2 * acc)), (1.0, max(0, 2 * acc - 1))):
                out += [_row(e, "passkey", n, "accuracy", a, depth=d),
                        _row(e, "passkey", n, "key_bits_per_digit", 3.3 * (1 - a), depth=d)]
        if e.name in SHORT:
            out.append(_row(e, "short_context", L0, "relative_change", SHORT[e.name]))
    out.append(Result(model="other", method="yarn", factor=4.0, task="perplexity", length=256, depth=None,
                      metric="bits_per_byte", value=0.1, n=1))   # not an entry of the study: ignored
    return out


@pytest.fixture
def numbers():
    return collect(rows(), ENTRIES)


def test_collect_averages_depths_and_reads_short_context(numbers):
    assert numbers["yarn ×4"].passkey == pytest.approx({256: 1.0, 512: 1.0, 1024: 0.5})
    assert numbers["yarn ×4"].effective_length == 512 and numbers["linear ×4"].effective_length is None
    assert numbers["linear ×4 fine-tuned"].short_context_change == 0.08
    assert numbers["yarn ×4"].short_context_change is None


def test_headline_table_has_one_row_per_entry_and_bolds_the_best(numbers):
    lines = headline_table(ENTRIES, numbers, LENGTHS, L0)
    assert lines[0] == ("| model / method | 256 (L0) | 512 (2×L0) | 1024 (4×L0) | passkey (mean) | key bits/digit | "
                        "effective length | fine-tune steps | fine-tune time |")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    body = {row[0]: row[1:] for row in cells}
    assert list(body) == [e.name for e in ENTRIES]
    assert body["default (no scaling)"] == ["**2.000**", "3.000", "5.000", "0.50", "1.65", "256", "", ""]
    assert body["yarn ×4 fine-tuned"] == ["2.010", "**1.950**", "**1.900**", "1.00", "0.00", "1024", "20", "2.1 min"]
    assert body["linear ×4"][5] == "<256" and body["yarn ×4 fine-tuned (PoSE 256)"][-1] == "30 s"


def test_findings_come_from_the_numbers(numbers):
    text = "\n".join(findings(ENTRIES, numbers, LENGTHS, L0, FACTOR))
    assert "at 1024 (4×L0) the unscaled model scores 5.000 bits/byte (2.000 at L0); against it: yarn ×4 2.100 " \
           "(-58.0 %), linear ×4 2.700 (-46.0 %)" in text
    assert "Worse at 1024 than at a shorter length: default (no scaling) (2.000 at 256 → 5.000, +150.0 %), " \
           "yarn ×4 (2.020 at 256 → 2.100, +4.0 %), linear ×4 (2.600 at 256 → 2.700, +3.8 %); best at 1024 " \
           "itself: none." in text
    assert "at the target length 1024 (4×L0) bits/byte: yarn ×4 fine-tuned 1.900, yarn ×4 fine-tuned (PoSE 256) " \
           "1.980, linear ×4 fine-tuned 2.150" in text
    assert "yarn ×4 fine-tuned beats linear ×4 fine-tuned at 1024 (1.900 vs 2.150, -11.6 %)" in text
    assert "Fine-tuning changed bits/byte at 1024: yarn ×4 2.100 → 1.900, linear ×4 2.700 → 2.150, " \
           "yarn ×4 (PoSE 256) 2.100 → 1.980." in text
    assert "changes by +1.2 % (yarn ×4 fine-tuned), +8.0 % (linear ×4 fine-tuned)" in text
    assert "Largest change after fine-tuning: +8.0 % (linear ×4 fine-tuned)" in text
    assert "longest: yarn ×4 fine-tuned (1024 tokens)" in text


def test_a_method_that_keeps_improving_with_length_is_named(numbers):
    numbers["yarn ×4"].bits_per_byte.update({512: 2.0, 1024: 1.9})
    text = findings(ENTRIES, numbers, LENGTHS, L0, FACTOR)[0]
    assert "yarn ×4 1.900 (-62.0 %), linear ×4" in text and text.endswith("best at 1024 itself: yarn ×4.")


def test_findings_follow_the_numbers_when_linear_wins(numbers):
    numbers["linear ×4 fine-tuned"].bits_per_byte[1024] = 1.5
    text = "\n".join(findings(ENTRIES, numbers, LENGTHS, L0, FACTOR))
    assert "linear ×4 fine-tuned beats yarn ×4 fine-tuned at 1024 (1.500 vs 1.900" in text
    numbers["linear ×4 fine-tuned"].bits_per_byte[1024] = 1.9001
    assert "ties with" in "\n".join(findings(ENTRIES, numbers, LENGTHS, L0, FACTOR))


def test_findings_leave_out_what_was_not_measured():
    free = ENTRIES[:3]
    found = findings(free, collect(rows(), free), LENGTHS, L0, FACTOR)
    assert len(found) == 2 and not any("after fine-tuning" in line.lower() for line in found)


def test_evaluated_target_length_is_the_evaluated_factor_times_l0_or_the_longest():
    assert evaluated_target_length([256, 1024, 4096], 256, 16) == 4096
    assert evaluated_target_length([256, 1024], 256, 16) == 1024
