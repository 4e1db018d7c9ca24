"""Figures of a result: a heatmap for a two-axis sweep, curves for a one-axis sweep, and the
boundaries a refine search found (log-log, with the fitted power law and the theory's slope).

Figures are built as plain `matplotlib.figure.Figure` objects, never through pyplot, so no
global figure registry holds them (a long-running API draws many) and no display is needed.

The heatmap uses a log colour scale for the mean test error, like the paper's figure; curves show
the mean test error with its 95 % interval over seeds as a band (the summary's `ci95`), one line
per value of a second axis if there is one.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import Any, Literal

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

# Axes tried when a result does not name its own, most telling first.
CANDIDATE_AXES = (
    "n",
    "d_over_n",
    "gamma",
    "gamma_times_n",
    "d",
    "width",
    "alpha",
    "corruption_rate",
    "num_corrupt",
    "init_scale",
    "lr",
    "max_steps",
    "n_test",
)
METRIC = "test_error"
MAX_LINES = 6
PlotKind = Literal["auto", "heatmap", "lines", "boundary"]
# Test errors of 0 cannot sit on a log scale: they are drawn at this floor.
LOG_FLOOR = 1e-3


def plot_axes(result: dict[str, Any]) -> list[str]:
    """The swept axes with more than one value (at most two), from the result or inferred."""
    cells = result["cells"]
    named = [a for a in result.get("axes") or [] if a in cells[0]["params"]]
    candidates = named or list(CANDIDATE_AXES)

    def distinct(axis: str) -> int:
        return len({c["params"].get(axis) for c in cells})

    varying = [a for a in candidates if distinct(a) > 1]
    if named:
        return varying[:2]
    # Inferred: the first pair (or single axis) whose value combinations name each cell once.
    for x, y in itertools.combinations(varying, 2):
        if distinct(x) * distinct(y) == len(cells) == len({_key(c, (x, y)) for c in cells}):
            return [x, y]
    return [a for a in varying if distinct(a) == len(cells)][:1] or varying[:1]


def _key(cell: dict[str, Any], axes: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(cell["params"].get(a) for a in axes)


def _mean_ci(cell: dict[str, Any]) -> tuple[float, float, float]:
    """The metric's mean and 95 % interval; a cell with no interval (one run, or a summary
    stored before intervals) has a band of zero width at its mean."""
    stats = cell["summary"][METRIC]
    lo, hi = stats.get("ci95") or (stats["mean"], stats["mean"])
    return stats["mean"], lo, hi


def _value(value: Any) -> str:
    """A tick or legend text: numbers in short form, other values (a stop rule) as they are."""
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _label(axis: str) -> str:
    return {"d_over_n": "d / n", "gamma_times_n": "gamma n"}.get(axis, axis)


def heatmap(result: dict[str, Any], x: str, y: str) -> Figure:
    cells = result["cells"]
    xs = sorted({c["params"][x] for c in cells})
    ys = sorted({c["params"][y] for c in cells})
    grid = np.full((len(ys), len(xs)), np.nan)
    for cell in cells:
        grid[ys.index(cell["params"][y]), xs.index(cell["params"][x])] = _mean_ci(cell)[0]
    fig = Figure(figsize=(1.0 + 0.55 * len(xs), 1.2 + 0.45 * len(ys)), dpi=110)
    ax = fig.subplots()
    vmax = max(float(np.nanmax(grid)), LOG_FLOOR * 10)
    image = ax.imshow(
        np.clip(grid, LOG_FLOOR, None),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        norm=LogNorm(vmin=LOG_FLOOR, vmax=vmax),
    )
    ax.set_xticks(range(len(xs)), [_value(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_value(v) for v in ys])
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.set_title(f"mean test error ({_label(y)} vs {_label(x)})")
    fig.colorbar(image, ax=ax, label=f"test error (log; 0 shown at {LOG_FLOOR:g})")
    fig.tight_layout()
    return fig


def curves(result: dict[str, Any], x: str, line: str | None) -> Figure:
    cells = result["cells"]
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.subplots()
    groups = sorted({c["params"][line] for c in cells}) if line else [None]
    for value in groups:
        members = sorted(
            (c for c in cells if line is None or c["params"][line] == value),
            key=lambda c: c["params"][x],
        )
        xs = [c["params"][x] for c in members]
        means, los, his = zip(*(_mean_ci(c) for c in members), strict=True)
        label = f"{_label(line)} = {_value(value)}" if line else None
        (drawn,) = ax.plot(xs, means, marker="o", label=label)
        ax.fill_between(xs, los, his, color=drawn.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(_label(x))
    ax.set_ylabel("mean test error (band: 95 % interval)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if line:
        ax.legend()
    fig.tight_layout()
    return fig


def boundary_axis(result: dict[str, Any]) -> str:
    """The line axis to draw boundaries against: the fit's, else the first that varies."""
    if result.get("scaling"):
        return result["scaling"]["axis"]
    lines = [b["line"] for b in result["boundaries"]]
    varying = [a for a in lines[0] if len({ln[a] for ln in lines}) > 1]
    if not varying:
        raise ValueError("the boundaries' lines do not differ in any axis")
    return varying[0]


def boundary_plot(result: dict[str, Any]) -> Figure:
    """Each line's boundary estimate with its 95 % interval against the line axis, log-log;
    the fitted power law and, through the fit's middle, a line of the theory's slope."""
    if not result.get("boundaries"):
        raise ValueError("the result has no boundaries to draw (no refine section)")
    axis, fit = boundary_axis(result), result.get("scaling")
    found = [b for b in result["boundaries"] if b["estimate"] is not None]
    if not found:
        raise ValueError("no line found a crossing")
    xs = np.array([float(b["line"][axis]) for b in found])
    ys = np.array([b["estimate"] for b in found])
    lows = np.array([b["ci95"][0] if b["ci95"] else y for b, y in zip(found, ys, strict=True)])
    highs = np.array([b["ci95"][1] if b["ci95"] else y for b, y in zip(found, ys, strict=True)])
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.subplots()
    ax.errorbar(xs, ys, yerr=[ys - lows, highs - ys], fmt="o", capsize=3, label="boundary (95 %)")
    span = np.geomspace(xs.min(), xs.max(), 50)
    if fit:
        ax.plot(span, fit["constant"] * span ** fit["exponent"], label=_fit_label(fit))
        if fit["theory_exponent"] is not None:
            middle = math.exp(np.log(xs).mean())
            through = fit["constant"] * middle ** fit["exponent"]
            theory = through * (span / middle) ** fit["theory_exponent"]
            ax.plot(span, theory, "--", label=f"theory slope {fit['theory_exponent']:+g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_label(axis))
    refine = result.get("refine") or {}
    crossing = f"mean {refine['metric']} = {refine['level']:g}" if refine else "the crossing"
    ax.set_ylabel(f"{_label(refine.get('axis', 'boundary'))} where {crossing}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def _fit_label(fit: dict[str, Any]) -> str:
    interval = fit.get("exponent_ci95")
    around = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
    return f"fit: exponent {fit['exponent']:.2f}{around}"


def plot_result(result: dict[str, Any], kind: PlotKind = "auto") -> Figure:
    """A heatmap or curves of the mean test error over the swept axes.

    `auto` draws a heatmap when two axes are swept and the second has more values than make
    readable lines (MAX_LINES), else curves over the first axis, one line per second-axis value.
    `boundary` draws a refine result's boundaries (`boundary_plot`).
    """
    if kind == "boundary":
        return boundary_plot(result)
    if not result.get("cells"):
        raise ValueError("the result has no cells to draw")
    axes = plot_axes(result)
    if kind == "heatmap" and len(axes) != 2:
        raise ValueError(f"a heatmap needs two swept axes; this result sweeps {axes or 'none'}")
    if len(axes) == 2 and kind != "lines":
        many = len({c["params"][axes[1]] for c in result["cells"]}) > MAX_LINES
        if kind == "heatmap" or many:
            return heatmap(result, axes[0], axes[1])
    return curves(result, axes[0] if axes else "n", axes[1] if len(axes) == 2 else None)


def figure_png(result: dict[str, Any], kind: PlotKind = "auto") -> bytes:
    buffer = io.BytesIO()
    plot_result(result, kind).savefig(buffer, format="png")
    return buffer.getvalue()
