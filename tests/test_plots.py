"""Line plots draw each cell's 95 % interval (the summary's `ci95`) as a band around its mean."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from bo_engine.plots import curves, figure_png

pytestmark = pytest.mark.fast


def _cell(index: int, n: int, mean: float, ci95: list[float] | None) -> dict:
    metric = {"mean": mean, "std": 0.01, "ci95": ci95, "count": 5}
    return {"index": index, "params": {"n": n}, "runs": [{}] * 5, "summary": {"test_error": metric}}


RESULT = {
    "axes": ["n"],
    "cells": [
        _cell(0, 50, 0.20, [0.15, 0.26]),
        _cell(1, 100, 0.12, [0.10, 0.15]),
        _cell(2, 150, 0.08, [0.02, 0.11]),
    ],
}


def _band(result: dict) -> np.ndarray:
    ax = curves(result, "n", None).axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    return band.get_paths()[0].vertices


def test_band_vertices_are_the_interval_bounds() -> None:
    vertices = _band(RESULT)
    for cell in RESULT["cells"]:
        n, (lo, hi) = cell["params"]["n"], cell["summary"]["test_error"]["ci95"]
        ys = {round(float(y), 9) for x, y in vertices if x == n}
        assert {round(lo, 9), round(hi, 9)} <= ys, (n, ys)


def test_a_cell_without_an_interval_has_a_band_of_zero_width() -> None:
    result = {**RESULT, "cells": [_cell(0, 50, 0.2, None), _cell(1, 100, 0.1, [0.05, 0.15])]}
    ys = {round(float(y), 9) for x, y in _band(result) if x == 50}
    assert ys == {0.2}
    assert figure_png(result, "lines").startswith(b"\x89PNG")


def _gamma_cell(index: int, gamma: float, n: int, d: int, mean: float) -> dict:
    params = {"n": n, "d": d, "gamma": gamma, "alpha": 0.5}
    metric = {"mean": mean, "std": 0.01, "ci95": [mean - 0.01, mean + 0.01], "count": 5}
    return {"index": index, "params": params, "runs": [{}] * 5, "summary": {"test_error": metric}}


GAMMAS = [0.001, 0.01, 0.1]
# Curves over gamma, one per n (d = 100): with the default theory constants (1) the benign
# curve gamma = 1/n crosses n = 50 at 0.02, and the harmful one gamma = alpha^3 / d at 0.00125.
SWEEP = {
    "axes": ["gamma", "n"],
    "theory": {"benign_gamma_n": 1.0, "benign_d_over_n": 1.0, "harmful_gamma_d_over_alpha3": 1.0},
    "cells": [
        _gamma_cell(3 * i + j, g, n, 100, 0.3 - 0.1 * j)
        for i, n in enumerate((50, 20))
        for j, g in enumerate(GAMMAS)
    ],
}


def _dashed_x(ax, style: str) -> list[float]:
    return sorted(float(line.get_xdata()[0]) for line in ax.lines if line.get_linestyle() == style)


def test_curves_overlay_the_theory_where_it_crosses_each_curve() -> None:
    ax = curves(SWEEP, "gamma", "n", overlay=True).axes[0]
    assert _dashed_x(ax, "--") == [pytest.approx(1 / 50), pytest.approx(1 / 20)]
    assert _dashed_x(ax, ":") == [pytest.approx(0.5**3 / 100)] * 2
    assert _dashed_x(curves(SWEEP, "gamma", "n").axes[0], "--") == []  # only when asked


def test_heatmap_overlay_crosses_each_row_at_the_theory_curve() -> None:
    from bo_engine.plots import heatmap

    ax = heatmap(SWEEP, "gamma", "n", overlay=True).axes[0]
    (benign,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    # Rows are n = 20, 50 (sorted); gamma cells 0.001, 0.01, 0.1 at indices 0, 1, 2 (log spaced).
    positions = [float(x) for x in benign.get_xdata()]
    assert positions == [pytest.approx(1 + np.log10(5)), pytest.approx(1 + np.log10(2))]


def test_overlay_marks_the_boundaries_a_refine_job_found() -> None:
    found = {
        "refine": {"axis": "gamma", "level": 0.15},
        "boundaries": [
            {"line": {"n": 50}, "estimate": 0.03, "ci95": [0.02, 0.05]},
            {"line": {"n": 20}, "estimate": None, "ci95": None},
        ],
    }
    ax = curves({**SWEEP, **found}, "gamma", "n", overlay=True).axes[0]
    (marks,) = [c for c in ax.containers if hasattr(c, "lines")]
    xs, ys = marks.lines[0].get_data()
    assert list(xs) == [0.03] and list(ys) == [0.15]
    assert figure_png({**SWEEP, **found}, "heatmap", overlay=True).startswith(b"\x89PNG")
