"""The top of a study's report.md: one table a person reads in ten seconds, and findings computed from it.

Everything here is a pure function of result rows and the study's list of entries (which model label, method
and factor each table row is, and its fine-tuning cost); no number or verdict is written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ropescale.evaluate.results import Result
from ropescale.evaluate.ruler import THRESHOLD as RULER_THRESHOLD
from ropescale.report.tables import EFFECTIVE_THRESHOLD, effective_cell, effective_length, mean_by_length

KINDS = ("baseline", "training-free", "fine-tuned")


@dataclass(frozen=True)
class Entry:
    """One row of the headline table: who the rows belong to and what fine-tuning cost (None: training-free)."""

    name: str                # shown in the table and the findings
    model: str               # Result.model of its rows
    method: str
    factor: float
    kind: str                # one of KINDS
    steps: int | None = None
    seconds: float | None = None
    strategy: str = ""       # how a fine-tuned entry deviates from plain full fine-tuning ("PoSE 256", "LoRA 8")

    def owns(self, row: Result) -> bool:
        return (row.model, row.method, float(row.factor)) == (self.model, self.method, float(self.factor))


@dataclass
class Numbers:
    """An entry's measurements: per length bits/byte, perplexity and passkey accuracy (mean over depths)."""

    bits_per_byte: dict[int, float] = field(default_factory=dict)
    perplexity: dict[int, float] = field(default_factory=dict)
    passkey: dict[int, float] = field(default_factory=dict)
    key_bits: dict[int, float] = field(default_factory=dict)   # passkey key bits per digit (guessing: 3.32)
    ruler: dict[int, float] = field(default_factory=dict)   # RULER average per length
    short_context_change: float | None = None   # perplexity at L0 / the base model's − 1

    @property
    def effective_length(self) -> int | None:
        return effective_length(self.passkey) if self.passkey else None


def collect(rows: Iterable[Result], entries: Sequence[Entry]) -> dict[str, Numbers]:
    """entry name -> Numbers; passkey accuracy is averaged over depths weighted by trials."""
    rows = list(rows)
    out = {}
    for entry in entries:
        mine = [r for r in rows if entry.owns(r)]
        numbers = Numbers(bits_per_byte=mean_by_length(mine, "perplexity", "bits_per_byte"),
                          perplexity=mean_by_length(mine, "perplexity", "perplexity"),
                          passkey=mean_by_length(mine, "passkey", "accuracy"),
                          key_bits=mean_by_length(mine, "passkey", "key_bits_per_digit"),
                          ruler=mean_by_length(mine, "ruler", "average"))
        change = [r.value for r in mine if r.task == "short-context" and r.metric == "relative_change"]
        numbers.short_context_change = change[-1] if change else None
        out[entry.name] = numbers
    return out


# ------------------------------------------------------------------------------------------ formatting

def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _length_name(length: int, l0: int) -> str:
    ratio = length / l0
    if length == l0:
        return f"{length} (L0)"
    return f"{length} ({ratio:g}×L0)" if ratio == round(ratio) or ratio < 1 else f"{length}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(value: float) -> str:
    return f"{100 * value:+.1f} %"


# ------------------------------------------------------------------------------------------ the table

def headline_table(entries: Sequence[Entry], numbers: dict[str, Numbers], lengths: Sequence[int],
                   l0: int) -> list[str]:
    """Markdown lines: rows = entries, columns = bits/byte per length (best in bold), passkey accuracy and key bits
    per digit averaged over lengths and depths, effective length, fine-tuning steps and wall time (blank when
    training-free)."""
    best = {n: min((numbers[e.name].bits_per_byte[n] for e in entries if n in numbers[e.name].bits_per_byte
                    and math.isfinite(numbers[e.name].bits_per_byte[n])), default=None) for n in lengths}
    ruler = any(numbers[e.name].ruler for e in entries)
    header = ["model / method", *[_length_name(n, l0) for n in lengths], "passkey (mean)", "key bits/digit",
              "effective length", *(["RULER (mean)", "RULER effective length"] if ruler else []),
              "fine-tune steps", "fine-tune time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for e in entries:
        num = numbers[e.name]
        cells = []
        for n in lengths:
            value = num.bits_per_byte.get(n)
            text = _num(value)
            cells.append(f"**{text}**" if value is not None and best[n] is not None and value == best[n] else text)
        passkey = sum(num.passkey.values()) / len(num.passkey) if num.passkey else None
        key_bits = sum(num.key_bits.values()) / len(num.key_bits) if num.key_bits else None
        eff = effective_cell(num.passkey) if num.passkey else ""
        extra = []
        if ruler:
            r = num.ruler
            extra = [_num(sum(r.values()) / len(r), 2) if r else "", effective_cell(r, RULER_THRESHOLD) if r else ""]
        lines.append("| " + " | ".join([e.name, *cells, _num(passkey, 2), _num(key_bits, 2), eff, *extra,
                                        "" if e.steps is None else str(e.steps), _duration(e.seconds)]) + " |")
    return lines


# ------------------------------------------------------------------------------------------ findings

def evaluated_target_length(lengths: Sequence[int], l0: int, factor: float) -> int:
    """The target length factor·L0 when it was evaluated, else the longest evaluated length."""
    target = int(round(factor * l0))
    return target if target in lengths else max(lengths)


def _at(entries: Sequence[Entry], numbers: dict[str, Numbers], length: int, kind: str) -> list[tuple[Entry, float]]:
    return [(e, numbers[e.name].bits_per_byte[length]) for e in entries
            if e.kind == kind and length in numbers[e.name].bits_per_byte]


def _rise_past_best(values: dict[int, float], longest: int) -> tuple[int, float] | None:
    """(best length, its bits/byte) when bits/byte at `longest` is worse than at a shorter length (at the 3
    decimals shown), else None: with more context a model that uses it should only get better."""
    best = min((n for n in values if n < longest), key=lambda n: values[n], default=None)
    if best is None or round(values[longest], 3) <= round(values[best], 3):
        return None
    return best, values[best]


def finding_training_free(entries, numbers, lengths, l0) -> str | None:
    """At the longest length: every training-free method against the unscaled model, and who gets worse past
    its best length (the sign of a rope that stopped working) versus who keeps improving."""
    base = next((e for e in entries if e.kind == "baseline"), None)
    longest = max(lengths)
    if base is None or longest <= l0 or longest not in numbers[base.name].bits_per_byte:
        return None
    bpb = numbers[base.name].bits_per_byte
    reference = bpb[longest]
    series = [(base, reference)] + sorted(_at(entries, numbers, longest, "training-free"), key=lambda item: item[1])
    text = f"**Without fine-tuning**, at {longest} ({longest / l0:g}×L0) the unscaled model scores {reference:.3f} " \
           "bits/byte" + (f" ({bpb[l0]:.3f} at L0)" if l0 in bpb else "")
    if len(series) > 1:
        text += "; against it: " + ", ".join(f"{e.name} {v:.3f} ({_pct(v / reference - 1)})" for e, v in series[1:])
    rising, falling = [], []
    for e, v in series:
        turn = _rise_past_best(numbers[e.name].bits_per_byte, longest)
        if turn is None:
            falling.append(e.name)
        else:
            rising.append(f"{e.name} ({turn[1]:.3f} at {turn[0]} → {v:.3f}, {_pct(v / turn[1] - 1)})")
    text += f". Worse at {longest} than at a shorter length: {', '.join(rising) or 'none'}"
    text += f"; best at {longest} itself: {', '.join(falling) or 'none'}."
    return text


def finding_passkey(entries, numbers, kind: str, label: str) -> str | None:
    """Effective passkey length of each entry of one kind (and the baseline, for reference)."""
    chosen = [e for e in entries if (e.kind == kind or (kind == "training-free" and e.kind == "baseline"))
              and numbers[e.name].passkey]
    if not chosen:
        return None
    parts = [f"{e.name} {effective_cell(numbers[e.name].passkey)}" for e in chosen]
    text = (f"**Passkey {label}**: effective length (accuracy ≥ {EFFECTIVE_THRESHOLD:.0%} at every length up to "
            f"it) {', '.join(parts)}")
    longest = max(numbers[e.name].effective_length or 0 for e in chosen)
    if not longest:
        return text + f"; none reaches {EFFECTIVE_THRESHOLD:.0%} at the shortest length."
    best = [e.name for e in chosen if numbers[e.name].effective_length == longest]
    return text + f"; longest: {', '.join(best)} ({longest} tokens)."


def finding_finetuned(entries, numbers, lengths, l0, factor) -> str | None:
    """Fine-tuned runs at the target length: the ranking, yarn against linear, and the gain over training-free."""
    target = evaluated_target_length(lengths, l0, factor)
    tuned = _at(entries, numbers, target, "fine-tuned")
    if not tuned:
        return None
    steps = sorted({e.steps for e, _ in tuned if e.steps is not None})
    after = f"after {'/'.join(map(str, steps))} steps" if steps else "after fine-tuning"
    ranking = ", ".join(f"{e.name} {v:.3f}" for e, v in sorted(tuned, key=lambda item: item[1]))
    text = f"**{after.capitalize()}**, at the target length {target} ({target / l0:g}×L0) bits/byte: {ranking}."
    plain = {e.method: (e, v) for e, v in reversed(tuned) if not e.strategy}   # the first plain run per method
    if "yarn" in plain and "linear" in plain:
        (ye, yv), (le, lv) = plain["yarn"], plain["linear"]
        winner, loser = ((ye, yv), (le, lv)) if yv <= lv else ((le, lv), (ye, yv))
        # equal at the 3 decimals shown: say so rather than crown a winner by noise
        verb = "beats" if round(winner[1], 3) < round(loser[1], 3) else "ties with"
        text += (f" With the same {after.removeprefix('after ')}, {winner[0].name} {verb} {loser[0].name} at "
                 f"{target} ({winner[1]:.3f} vs {loser[1]:.3f}, {_pct(winner[1] / loser[1] - 1)}).")
    free = {e.method: v for e, v in _at(entries, numbers, target, "training-free")}
    gains = [f"{e.method} ×{e.factor:g}{f' ({e.strategy})' if e.strategy else ''} {free[e.method]:.3f} → {v:.3f}"
             for e, v in tuned if e.method in free]
    if gains:
        text += f" Fine-tuning changed bits/byte at {target}: {', '.join(gains)}."
    return text


def finding_short_context(entries, numbers, l0) -> str | None:
    """Perplexity at L0 after fine-tuning against the base model, and the training-free methods' for comparison."""
    tuned = [(e, numbers[e.name].short_context_change) for e in entries
             if e.kind == "fine-tuned" and numbers[e.name].short_context_change is not None]
    if not tuned:
        return None
    text = (f"**Short context**: perplexity at L0 = {l0} after fine-tuning changes by "
            f"{', '.join(f'{_pct(c)} ({e.name})' for e, c in tuned)} against the base model")
    base = next((e for e in entries if e.kind == "baseline"), None)
    reference = numbers[base.name].perplexity.get(l0) if base else None
    free = [(e, numbers[e.name].perplexity[l0] / reference - 1) for e in entries
            if e.kind == "training-free" and reference and l0 in numbers[e.name].perplexity]
    if free:
        text += f"; without fine-tuning: {', '.join(f'{_pct(c)} ({e.name})' for e, c in free)}"
    worst = max(tuned, key=lambda item: abs(item[1]))
    return text + f". Largest change after fine-tuning: {_pct(worst[1])} ({worst[0].name})."


def findings(entries: Sequence[Entry], numbers: dict[str, Numbers], lengths: Sequence[int], l0: int,
             factor: float) -> list[str]:
    """The findings that the numbers support, as markdown bullet lines (a finding without data is left out)."""
    found = [finding_training_free(entries, numbers, lengths, l0),
             finding_passkey(entries, numbers, "training-free", "without fine-tuning"),
             finding_finetuned(entries, numbers, lengths, l0, factor),
             finding_passkey(entries, numbers, "fine-tuned", "after fine-tuning"),
             finding_short_context(entries, numbers, l0)]
    return [f"- {text}" for text in found if text]
