"""The report's figures (matplotlib, Agg backend), each written atomically as a PNG.

- perplexity.png: perplexity and bits per byte against length, one line per series, log2 x, L0 marked;
- passkey.png / needle.png: accuracy heat maps, length × depth, one panel per series, every cell annotated;
- ruler.png: RULER scores, task × length (the average last), one panel per series;
- loss.png: the training loss of each fine-tuning run (its loss.csv) against the optimizer step;
- scaling.png: each rope's per-dimension scaling factor (inv_freq ÷ default inv_freq at the same θ) against the
  dimension's original wavelength 2π/θ_i, dynamic methods drawn at their target length factor·L0. (abf records
  only its new θ, so against "default at the same θ" it draws 1.)
"""

from __future__ import annotations

import math
from pathlib import Path

from ropescale.io import read_loss_csv, write_atomic
from ropescale.data.ruler import TASKS as RULER_TASKS
from ropescale.report import tables


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """The figure as a PNG at `path`, written atomically."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def _mark_l0(ax, l0s: list[int]) -> None:
    for l0 in l0s:
        ax.axvline(l0, color="0.4", linestyle="--", linewidth=1)
        ax.annotate(f"L0 = {l0}", xy=(l0, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="0.3")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", ":")


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _length_axis(ax, lengths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(n) for n in lengths], rotation=45 if len(lengths) > 6 else 0)
    ax.xaxis.set_minor_locator(_null_locator())
    ax.set_xlabel("context length (tokens)")
    ax.grid(True, which="major", alpha=0.3)


def perplexity_figure(rows, path: Path) -> Path | None:
    """Perplexity (left, log y) and bits per byte (right) against length; None without perplexity rows."""
    ppl = tables.by_length(rows, "perplexity", "perplexity")
    if not ppl:
        return None
    bpb = tables.by_length(rows, "perplexity", "bits_per_byte")
    series = tables.series_of(r for r in rows if r.task == "perplexity")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    lengths = sorted({n for values in ppl.values() for n in values})
    for i, (key, s) in enumerate(series.items()):
        for ax, data in zip(axes, (ppl, bpb)):
            values = data.get(key, {})
            xs = sorted(values)
            # marker and dash vary too, so series that coincide (e.g. all methods at L0) stay visible
            ax.plot(xs, [values[x] for x in xs], marker=_MARKERS[i % len(_MARKERS)],
                    linestyle=_DASHES[(i // len(_MARKERS)) % len(_DASHES)], label=s.label, alpha=0.85)
    values = [v for data in ppl.values() for v in data.values() if math.isfinite(v) and v > 0]
    wide = bool(values) and max(values) / min(values) > 10  # a diverging method: log scale keeps both readable
    if wide:
        axes[0].set_yscale("log")
    axes[0].set_ylabel("perplexity" + (" (log scale)" if wide else ""))
    axes[0].set_title("Perplexity against context length")
    axes[1].set_ylabel("bits per byte")
    axes[1].set_title("Bits per byte against context length")
    l0s = tables.original_lengths(r for r in rows if r.task == "perplexity")
    for ax in axes:
        _length_axis(ax, lengths)
        _mark_l0(ax, l0s)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), title="method")
    fig.tight_layout()
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)


def heatmap_figure(rows, task: str, path: Path) -> Path | None:
    """Accuracy heat maps (depth rows × length columns), one panel per series; None without `task` rows."""
    cells = tables.grid(rows, task, "accuracy")
    if not cells:
        return None
    series = tables.series_of(r for r in rows if r.task == task)
    panels = {}
    for key in (k for k in series if k in cells):
        values = cells[key]
        lengths, depths = sorted({n for n, _ in values}), sorted({d for _, d in values})
        matrix = [[values.get((n, d), math.nan) for n in lengths] for d in depths]  # [depth, length]
        panels[series[key].label] = (matrix, [str(n) for n in lengths], [f"{d:g}" for d in depths])
    return _heatmaps(panels, f"depth of the {'key' if task == 'passkey' else 'needle'} (0 = start)",
                     f"{task} accuracy by length and depth", "accuracy", path)


def ruler_figure(rows, path: Path) -> Path | None:
    """RULER scores (task rows × length columns, the average last), one panel per series; None without rows."""
    cells = tables.ruler_grid(rows)
    if not cells:
        return None
    series = tables.series_of(r for r in rows if r.task == "ruler")
    panels = {}
    for key in (k for k in series if k in cells):
        values = cells[key]
        lengths = sorted({n for n, _ in values})
        names = [m for m in RULER_TASKS if any(name == m for _, name in values)] + ["average"]
        matrix = [[values.get((n, m), math.nan) for n in lengths] for m in names]  # [task, length]
        panels[series[key].label] = (matrix, [str(n) for n in lengths], names)
    return _heatmaps(panels, "RULER task", "RULER score by task and length (blank: does not fit)", "score", path)


def _heatmaps(panels: dict[str, tuple], ylabel: str, title: str, scale: str, path: Path) -> Path:
    """One annotated heat map per panel (label -> (matrix [row][column], column labels, row labels)), values in
    [0, 1], NaN left blank."""
    plt = _pyplot()
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    image = None
    for ax, (label, (matrix, xlabels, ylabels)) in zip(axes.flat, panels.items()):
        image = ax.imshow(matrix, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", origin="upper")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if 0.25 < value < 0.85 else "white")
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=45 if len(xlabels) > 5 else 0)
        ax.set_yticks(range(len(ylabels)), ylabels)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.colorbar(image, ax=axes.ravel().tolist(), label=scale, shrink=0.8)
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)


def _ropes(rows) -> dict[str, tuple]:
    """label -> (RopeSpec, head_dim, L0) for the distinct ropes in the rows."""
    from ropescale.rope import RopeSpec

    out = {}
    for r in rows:
        record, head_dim = r.settings.get("rope"), r.extra.get("head_dim")
        if not isinstance(record, dict) or not head_dim:
            continue
        spec = RopeSpec(**record)
        label = tables.base_label(r.model, spec.method, spec.factor, False)
        out.setdefault(label, (spec, int(head_dim), int(r.extra.get("original_length", 0)) or None))
    return out


def scaling_figure(rows, path: Path) -> Path | None:
    """Per-dimension scaling factor against original wavelength for each rope present; None without ropes."""
    from ropescale.rope import RopeSpec, frequencies

    ropes = _ropes(rows)
    if not ropes:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    l0s = set()
    for label, (spec, head_dim, l0) in sorted(ropes.items(), key=lambda item: tables.method_order(item[1][0].method)):
        reference = RopeSpec("default", rope_theta=spec.rope_theta, partial_rotary_factor=spec.partial_rotary_factor)
        base, _ = frequencies(reference, head_dim)
        l0 = spec.original_max_position_embeddings or l0
        target = int(round(spec.factor * l0)) if l0 else None
        inv_freq, scale = frequencies(spec, head_dim, seq_len=target)
        wavelength = (2 * math.pi / base).tolist()
        ratio = (inv_freq / base).tolist()
        name = label + (f" (attention scale {scale:.3f})" if abs(scale - 1.0) > 1e-6 else "")
        ax.plot(wavelength, ratio, marker=".", label=name)
        if l0:
            l0s.add(l0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("original wavelength 2π/θ_i of the dimension (tokens, log2)")
    ax.set_ylabel("inv_freq ÷ default inv_freq (log2)")
    ax.set_title("Per-dimension RoPE scaling against wavelength (dynamic methods at factor × L0)")
    ax.grid(True, alpha=0.3)
    _mark_l0(ax, sorted(l0s))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), title="method")
    fig.tight_layout()
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)


def read_loss_curve(path: str | Path) -> tuple[list[float], list[float]]:
    """(steps, losses) of a fine-tuning run's loss.csv; ValueError naming the file when it is missing or lacks the
    step/loss columns."""
    rows = read_loss_csv(path)
    return [r["step"] for r in rows], [r["loss"] for r in rows]


def loss_figure(curves, path: Path) -> Path | None:
    """Training loss against optimizer step, one line per run (label -> loss.csv); None when no run logged a
    step. The raw per-step loss is drawn faintly, with a moving average over ~5 % of the run on top."""
    data = {label: read_loss_curve(p) for label, p in curves.items()}
    data = {label: xy for label, xy in data.items() if xy[0]}
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (label, (steps, losses)) in enumerate(data.items()):
        color = f"C{i % 10}"
        window = max(1, len(losses) // 20)
        smooth = [sum(losses[max(0, j - window + 1): j + 1]) / len(losses[max(0, j - window + 1): j + 1])
                  for j in range(len(losses))]
        if window > 1:
            ax.plot(steps, losses, color=color, alpha=0.25, linewidth=1)
        ax.plot(steps, smooth, color=color, marker="o" if len(steps) <= 30 else None, markersize=3,
                label=label + (f" (mean of {window} steps)" if window > 1 else ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Fine-tuning loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", title="run")
    fig.tight_layout()
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- ropescale search


def search_score_figure(history: list[dict], fitness: str, path: Path) -> Path | None:
    """Best and median score of each generation of a search (history.csv rows); None without rows."""
    if not history:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    generations = [int(row["generation"]) for row in history]
    ax.plot(generations, [float(row["best"]) for row in history], marker="o", label="best")
    ax.plot(generations, [float(row["median"]) for row in history], linestyle="--", color="0.5",
            label="median of the population")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel(f"{fitness} fitness (nats per scored token)")
    ax.set_title(f"search score against generation ({fitness})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)


def search_factors_figure(found: list[float], references: dict[str, list[float]], path: Path,
                          attention: dict[str, float] | None = None) -> Path | None:
    """The searched per-pair factors against the seeds' (YaRN's, PI's, NTK's), pair 0 = highest frequency, log
    y; the legend carries each one's attention scale when given."""
    if not found:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    attention = attention or {}

    def label(name: str) -> str:
        return name + (f" (attention {attention[name]:.3g})" if name in attention else "")

    pairs = list(range(len(found)))
    for (name, factors), dash in zip(references.items(), _DASHES * 3):
        yarn = name == "yarn"  # wide and underneath, so that it shows where the searched factors equal it
        ax.plot(pairs, factors, linestyle="-" if yarn else dash, color="tab:orange" if yarn else "0.55",
                linewidth=4 if yarn else 1.5, alpha=0.5 if yarn else 1.0, label=label(name))
    ax.plot(pairs, found, marker="o", markersize=3, linewidth=1, color="tab:blue", label=label("searched"))
    ax.set_yscale("log", base=2)
    ax.set_xlabel("rotary pair i (0 = highest frequency)")
    ax.set_ylabel("factor λ_i (frequency divisor)")
    ax.set_title("searched long_factor against the seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)
