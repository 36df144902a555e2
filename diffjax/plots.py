"""PNG figures of runs and benchmarks (matplotlib, drawn off-screen).

Figures are built on :class:`matplotlib.figure.Figure` directly and written with the Agg
canvas: nothing here touches pyplot's global state or the interactive backend, so the
functions are safe in scripts, on headless machines and inside notebooks (where the
returned paths can be shown with ``IPython.display.Image``).

* :func:`plot_training_curves`: a run's ``metrics.jsonl`` (and ``metrics.json``, if the
  demo evaluation ran) as ``plots/loss.png``, ``plots/train_metrics.png`` and
  ``plots/eval.png`` in the workdir; ``train.py`` calls it at the end of every run.
* :func:`plot_error_vs_nfe`, :func:`plot_bars`, :func:`plot_grouped_bars`: the benchmarks'
  main figures (sampler error against NFE, LPIPS per method, images/s).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "read_metrics",
    "plot_training_curves",
    "plot_error_vs_nfe",
    "plot_bars",
    "plot_grouped_bars",
]

# metrics.jsonl keys that are bookkeeping, not curves worth a panel.
_SKIP_KEYS = ("step", "eta_sec")


def _figure(rows: int = 1, cols: int = 1, *, width: float = 6.0, height: float = 4.0):
    """A pyplot-free figure and its axes (a flat list)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, list(axes.flat)


def _is_url(path: str) -> bool:
    return "://" in os.fspath(path)


def _read_text(path: str) -> str | None:
    """The text of the file ``path`` (local, or a bucket URL through etils.epath), ``None`` if there is none."""
    if _is_url(path):
        from etils import epath

        return epath.Path(path).read_text() if epath.Path(path).exists() else None
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read()


def _save(fig, path: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attach the off-screen canvas explicitly
    if _is_url(path):  # a bucket: one object, uploaded whole
        from etils import epath

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        epath.Path(path).write_bytes(buffer.getvalue())
        return path
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def read_metrics(workdir: str) -> dict[str, np.ndarray]:
    """Read a run's ``metrics.jsonl`` into one array per scalar.

    A resumed run appends again from its checkpoint's step, so a step may be logged twice;
    the last line for each step wins and the result is sorted by step.

    Args:
      workdir: the run's directory (holding ``metrics.jsonl``).

    Returns:
      ``{"step": int array, name: float array, ...}``, with NaN where a line lacks a key.

    Raises:
      FileNotFoundError: when ``workdir/metrics.jsonl`` does not exist.
      ValueError: when a line is not a JSON object with an integer ``step``.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    text = _read_text(path)
    if text is None:
        raise FileNotFoundError(f"no metrics log at {path}; expected a workdir written by train.py / dj.train")
    by_step: dict[int, dict] = {}
    with io.StringIO(text) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: expected one JSON object per line, got {line[:80]!r}") from err
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError(f"{path}:{number}: expected a JSON object with an integer 'step', got {line[:80]!r}")
            by_step[row["step"]] = row
    steps = sorted(by_step)
    keys = sorted({k for row in by_step.values() for k, v in row.items() if isinstance(v, (int, float))} - {"step"})
    out = {"step": np.asarray(steps, dtype=np.int64)}
    for k in keys:
        out[k] = np.asarray([float(by_step[s].get(k, math.nan)) for s in steps], dtype=np.float64)
    return out


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with debiasing (TensorBoard's smoothing), NaN-tolerant."""
    out, avg, norm = np.empty_like(values), 0.0, 0.0
    for i, v in enumerate(values):
        if np.isfinite(v):
            avg, norm = weight * avg + (1 - weight) * v, weight * norm + (1 - weight)
        out[i] = avg / norm if norm else math.nan
    return out


def plot_training_curves(workdir: str, out_dir: str | None = None) -> list[str]:
    """Write a run's training curves and evaluation figures as PNG files.

    * ``loss.png``: the logged loss (log scale when positive) and its smoothed trend;
    * ``train_metrics.png``: one panel per other logged scalar (gradient norm, learning
      rate, images/s, ...);
    * ``eval.png``: when the run's demo evaluation wrote ``metrics.json``, its
      FD-AlexNet figures (EMA samples, untrained model, data floor) as bars.

    Args:
      workdir: the run's directory.
      out_dir: where to write; default ``workdir/plots``.

    Returns:
      The paths written (none when the log holds no step yet).

    Raises:
      FileNotFoundError: when the workdir has no ``metrics.jsonl``.
      ValueError: when ``metrics.jsonl`` is malformed, or has steps but no ``loss``.
    """
    metrics = read_metrics(workdir)
    if len(metrics["step"]) == 0:
        return []
    if "loss" not in metrics:
        raise ValueError(f"{workdir}/metrics.jsonl holds no 'loss' scalar; keys: {sorted(metrics)}")
    out_dir = os.path.join(workdir, "plots") if out_dir is None else out_dir
    steps, written = metrics["step"], []

    fig, (ax,) = _figure()
    loss = metrics["loss"]
    ax.plot(steps, loss, color="0.7", lw=1, label="loss")
    if len(loss) > 4:
        ax.plot(steps, _smooth(loss, 0.8), color="C0", lw=2, label="smoothed (EMA 0.8)")
    if np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="loss", title=f"training loss: {os.path.basename(os.path.abspath(workdir))}")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, os.path.join(out_dir, "loss.png")))

    others = [k for k in metrics if k not in ("loss", *_SKIP_KEYS)]
    if others:
        cols = min(3, len(others))
        rows = -(-len(others) // cols)
        fig, axes = _figure(rows, cols, width=4.5, height=3.2)
        for ax, key in zip(axes, others):
            ax.plot(steps, metrics[key], color="C1")
            ax.set(xlabel="training step", title=key)
            ax.grid(alpha=0.3)
        for ax in axes[len(others):]:
            ax.set_axis_off()
        written.append(_save(fig, os.path.join(out_dir, "train_metrics.png")))

    eval_path = os.path.join(workdir, "metrics.json")
    eval_text = _read_text(eval_path)
    if eval_text is not None:
        evaluation = json.loads(eval_text)
        bars = {k: float(v) for k, v in evaluation.items()
                if k.startswith("fd_") and isinstance(v, (int, float)) and math.isfinite(v)}
        if bars:
            written.append(plot_bars(bars, os.path.join(out_dir, "eval.png"), ylabel="Fréchet distance (lower is better)",
                                     title=f"evaluation at step {evaluation.get('step', '?')}", log=True))
    return written


def plot_error_vs_nfe(
    curves: Mapping[str, Mapping[int, float]],
    path: str,
    *,
    floor: float | None = None,
    ylabel: str = "error",
    title: str = "",
) -> str:
    """Error against number of score evaluations, one line per method, log-log axes.

    Args:
      curves: ``{method: {nfe: error}}``.
      path: the PNG to write.
      floor: draw a horizontal reference line (e.g. the exact-vs-exact noise floor).
      ylabel: the error's name.
      title: figure title.

    Returns:
      ``path``.

    Raises:
      ValueError: when ``curves`` is empty or a curve has no point.
    """
    if not curves or any(not c for c in curves.values()):
        raise ValueError(f"expected at least one method with at least one (nfe, error) point, got {dict(curves)!r}")
    fig, (ax,) = _figure(width=9, height=4.5)
    for i, (name, points) in enumerate(curves.items()):
        nfe = sorted(points)
        ax.plot(nfe, [points[n] for n in nfe], marker="o", ms=4, color=f"C{i % 10}",
                ls="-" if i < 10 else "--", label=name)
    if floor is not None:
        ax.axhline(floor, color="k", ls=":", label=f"floor {floor:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="NFE (score evaluations)", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: many lines
    return _save(fig, path)


def plot_bars(
    values: Mapping[str, float],
    path: str,
    *,
    ylabel: str = "",
    title: str = "",
    log: bool = False,
) -> str:
    """A bar chart of one number per label, with the values written on the bars.

    Args:
      values: ``{label: value}`` in display order.
      path: the PNG to write.
      ylabel: the value's name and unit.
      title: figure title.
      log: logarithmic value axis (values must be positive).

    Returns:
      ``path``.

    Raises:
      ValueError: when ``values`` is empty, or ``log`` with a non-positive value.
    """
    if not values:
        raise ValueError("expected at least one (label, value) pair, got none")
    if log and min(values.values()) <= 0:
        raise ValueError(f"log=True needs positive values, got {dict(values)!r}")
    fig, (ax,) = _figure(width=max(4.0, 1.1 * len(values)), height=4)
    labels = list(values)
    bars = ax.bar(range(len(labels)), [values[k] for k in labels], color=[f"C{i % 10}" for i in range(len(labels))])
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    if log:
        ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_grouped_bars(
    rows: Sequence[Mapping],
    path: str,
    *,
    group: str,
    label: str,
    value: str,
    ylabel: str = "",
    title: str = "",
) -> str:
    """Bars grouped along the x axis (e.g. LPIPS per method, grouped by task).

    Args:
      rows: records such as a benchmark's JSON rows.
      path: the PNG to write.
      group: the key whose values form the x-axis groups (e.g. ``"task"``).
      label: the key whose values are the bars of a group (e.g. ``"method"``), one colour each.
      value: the key of the bar height (e.g. ``"lpips"``).
      ylabel: the value's name.
      title: figure title.

    Returns:
      ``path``.

    Raises:
      ValueError: when ``rows`` is empty or a row lacks one of the keys.
    """
    if not rows:
        raise ValueError("expected at least one row, got none")
    for row in rows:
        missing = [k for k in (group, label, value) if k not in row]
        if missing:
            raise ValueError(f"row {dict(row)!r} lacks key(s) {missing}")
    groups = list(dict.fromkeys(r[group] for r in rows))
    labels = list(dict.fromkeys(r[label] for r in rows))
    members = {g: [r for r in rows if r[group] == g] for g in groups}
    # Each group packs only the bars it has (no gaps for methods a task lacks), centred on its tick.
    width = 0.8 / max(len(m) for m in members.values())
    fig, (ax,) = _figure(width=max(6.0, 1.6 * len(groups)), height=4.5)
    placed = {name: ([], []) for name in labels}
    for i, g in enumerate(groups):
        for j, r in enumerate(members[g]):
            placed[r[label]][0].append(i + (j - (len(members[g]) - 1) / 2) * width)
            placed[r[label]][1].append(float(r[value]))
    for j, name in enumerate(labels):
        bars = ax.bar(*placed[name], width, label=name, color=f"C{j % 10}")
        ax.bar_label(bars, fmt="%.3g", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), groups, rotation=15, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.margins(y=0.15)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)
