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
