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
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from bo_engine.spec import TheoryRule
from bo_engine.theory import regime_ratios

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


def heatmap(result: dict[str, Any], x: str, y: str, overlay: bool = False) -> Figure:
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
    if overlay:
        _overlay_heatmap(ax, result, (x, xs), (y, ys))
    fig.tight_layout()
    return fig


def curves(result: dict[str, Any], x: str, line: str | None, overlay: bool = False) -> Figure:
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
        if overlay:
            _theory_lines(ax, _edges(members, _rule(result), xs, log_at=True), drawn)
    if overlay:
        _found_points(ax, result, x)
    ax.set_xlabel(_label(x))
    ax.set_ylabel("mean test error (band: 95 % interval)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if line or overlay:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# --- overlays: the theory's curves and the boundaries found --------------------------------

THEORY_STYLES = {"benign": ("--", "theory: benign from gamma = c/n"),
                 "harmful": (":", "theory: harmful up to gamma = c alpha^3/d")}


def _rule(result: dict[str, Any]) -> TheoryRule:
    """The theory constants the result was made with (the defaults for an older result)."""
    return TheoryRule.model_validate(result.get("theory") or {})


def _found(result: dict[str, Any], axis: str) -> list[dict[str, Any]]:
    """The boundaries a refine result found along `axis`."""
    if (result.get("refine") or {}).get("axis") != axis:
        return []
    return [b for b in result.get("boundaries") or [] if b["estimate"] is not None]


def _edges(
    cells: list[dict[str, Any]], rule: TheoryRule, at: list[Any], log_at: bool
) -> dict[str, float]:
    """Where along a row of cells (at positions `at`, on a log scale if `log_at`) each of the
    theory's curves crosses it: the `regime_ratios` interpolated to 1 on a log scale (exact for
    their power laws); NaN where none does."""
    ratios = [regime_ratios(c["params"], rule) for c in cells]
    return {r: _crossing(at, [q[r] for q in ratios], log_at) for r in THEORY_STYLES}


def _crossing(at: list[Any], ratios: list[float], log_at: bool) -> float:
    for i in range(len(at) - 1):
        (x0, x1), (q0, q1) = at[i : i + 2], ratios[i : i + 2]
        if q0 != q1 and (q0 - 1) * (q1 - 1) <= 0:
            logs = q0 > 0 and q1 > 0
            t = math.log(q0) / (math.log(q0) - math.log(q1)) if logs else (1 - q0) / (q1 - q0)
            if log_at and x0 > 0 and logs:
                return math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
            return x0 + t * (x1 - x0)
    return math.nan


def _theory_lines(ax: Axes, edges: dict[str, float], drawn: Any) -> None:
    """Vertical lines where the theory's curves cross one curve, in its colour."""
    labelled = set(ax.get_legend_handles_labels()[1])
    for regime, (style, text) in THEORY_STYLES.items():
        if math.isfinite(edges[regime]):
            label = None if text in labelled else text
            ax.axvline(edges[regime], color=drawn.get_color(), ls=style, lw=1, label=label)


def _found_points(ax: Axes, result: dict[str, Any], x: str) -> None:
    """Each boundary found along `x` at the refine level, with its 95 % interval."""
    found = _found(result, x)
    if not found:
        return
    estimates = np.array([b["estimate"] for b in found])
    lows = np.array([(b["ci95"] or [b["estimate"]] * 2)[0] for b in found])
    highs = np.array([(b["ci95"] or [b["estimate"]] * 2)[1] for b in found])
    level = np.full(len(found), result["refine"]["level"])
    ax.errorbar(estimates, level, xerr=[estimates - lows, highs - estimates], fmt="D",
                color="black", capsize=3, label="boundary found (95 %)")


def _position(values: list[Any], value: float) -> float:
    """Where `value` falls among the sorted cell values, as a fractional cell index (log
    spacing when all are positive); NaN outside them."""
    if not values[0] <= value <= values[-1]:
        return math.nan
    if values[0] > 0:
        return float(np.interp(math.log(value), np.log(values), np.arange(len(values))))
    return float(np.interp(value, values, np.arange(len(values))))


def _overlay_heatmap(
    ax: Axes, result: dict[str, Any], x: tuple[str, list[Any]], y: tuple[str, list[Any]]
) -> None:
    """The theory's curves through the grid (crossed along each row), and the boundaries a
    refine job found along either axis."""
    (x_axis, xs), (y_axis, ys) = x, y
    by_point = {(c["params"][x_axis], c["params"][y_axis]): c for c in result["cells"]}
    rows = [[by_point.get((v, w)) for v in xs] for w in ys]
    rule, index = _rule(result), list(range(len(xs)))
    for regime, (style, text) in THEORY_STYLES.items():
        crossed = [
            _edges(row, rule, index, log_at=False)[regime] if all(row) else math.nan
            for row in rows
        ]
        label = text if any(map(math.isfinite, crossed)) else None
        ax.plot(crossed, range(len(ys)), color="white", ls=style, lw=1.5, label=label)
    for along, (axis, values), (other, others), flip in ((0, x, y, False), (1, y, x, True)):
        found = [b for b in _found(result, axis) if b["line"].get(other) in others]
        spots = [_position(values, b["estimate"]) for b in found]
        across = [others.index(b["line"][other]) for b in found]
        ax.plot(*((across, spots) if flip else (spots, across)), "D", color="red",
                label="boundary found" if found and not along else None)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="x-small", loc="lower left", framealpha=0.6)


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


def plot_result(result: dict[str, Any], kind: PlotKind = "auto", overlay: bool = False) -> Figure:
    """A heatmap or curves of the mean test error over the swept axes.

    `auto` draws a heatmap when two axes are swept and the second has more values than make
    readable lines (MAX_LINES), else curves over the first axis, one line per second-axis value.
    `boundary` draws a refine result's boundaries (`boundary_plot`). `overlay` adds the
    theory's curves (gamma = c/n, gamma = c alpha^3/d, with c from the result's theory
    constants) where they cross the swept cells, and the boundaries a refine job found.
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
            return heatmap(result, axes[0], axes[1], overlay)
    line = axes[1] if len(axes) == 2 else None
    return curves(result, axes[0] if axes else "n", line, overlay)


def figure_png(result: dict[str, Any], kind: PlotKind = "auto", overlay: bool = False) -> bytes:
    buffer = io.BytesIO()
    plot_result(result, kind, overlay).savefig(buffer, format="png")
    return buffer.getvalue()
