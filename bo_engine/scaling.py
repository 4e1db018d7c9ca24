"""How a boundary moves along the lines: a power law estimate = c * value^b, fitted on log-log
axes, next to the exponent the paper's theory predicts.

The fit is weighted least squares of log(estimate) on log(value), each line weighted by
1 / sigma^2 with sigma = (log hi - log lo) / (2 * 1.96) from its boundary's 95 % interval. The
exponent's standard error is the weighted fit's, scaled up by the residuals where they scatter
more than the intervals say (reduced chi-square > 1); its 95 % interval uses Student's t with
(lines - 2) degrees of freedom, so three lines or more give an interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

# Axes the lines may differ in for a fit.
SCALING_AXES = ("n", "d", "d_over_n", "alpha")
Z95 = 1.959963984540054


def theory_exponent(refine_axis: str, axis: str, fixed: dict[str, Any]) -> float | None:
    """The paper's exponent of the gamma boundary against `axis`, with `fixed` the grid axes
    held constant (lines differ in `axis` only, so n is fixed when d or d/n varies): vs n at
    fixed d/n -1 (benign side, gamma ~ 1/n); vs d at fixed n -1 and vs alpha +3 (harmful side,
    gamma ~ alpha^3 / d); None where it predicts none."""
    if refine_axis != "gamma":
        return None
    if axis == "n":
        return -1.0 if "d_over_n" in fixed else None
    return {"d": -1.0, "d_over_n": -1.0, "alpha": 3.0}.get(axis)


def fit_power_law(values: list[float], estimates: list[float], ci95s: list[tuple[float, float]]
                  ) -> dict[str, Any]:
    """exponent b, its 95 % interval (None below three points) and constant c of
    estimate = c * value^b, by weighted least squares on log-log axes."""
    x = np.log(np.asarray(values, dtype=float))
    y = np.log(np.asarray(estimates, dtype=float))
    sigma = np.array([max((math.log(hi) - math.log(lo)) / (2 * Z95), 1e-9) for lo, hi in ci95s])
    design = np.column_stack([np.ones_like(x), x]) / sigma[:, None]
    coef, *_ = np.linalg.lstsq(design, y / sigma, rcond=None)
    dof = len(x) - 2
    interval = None
    if dof >= 1:
        residuals = (y - (coef[0] + coef[1] * x)) / sigma
        inflate = max(1.0, float(residuals @ residuals) / dof)
        cov = np.linalg.inv(design.T @ design) * inflate
        half = float(stats.t.ppf(0.975, dof)) * math.sqrt(cov[1, 1])
        interval = [float(coef[1]) - half, float(coef[1]) + half]
    return {"exponent": float(coef[1]), "exponent_ci95": interval, "constant": math.exp(coef[0])}


def scaling(lines: list[dict[str, Any]], boundaries: list[dict[str, Any]], refine_axis: str
            ) -> dict[str, Any] | None:
    """The fit over the lines when they differ in exactly one axis of SCALING_AXES (and two or
    more lines have a positive estimate with an interval); else None."""
    varying = [a for a in (lines[0] if lines else {}) if len({ln[a] for ln in lines}) > 1]
    if len(varying) != 1 or varying[0] not in SCALING_AXES:
        return None
    axis = varying[0]
    usable = [
        (float(b["line"][axis]), b["estimate"], b["ci95"])
        for b in boundaries
        if b["estimate"] is not None and b["ci95"] is not None and b["ci95"][0] > 0
    ]
    if len(usable) < 2:
        return None
    values, estimates, ci95s = zip(*usable, strict=True)
    fit = fit_power_law(list(values), list(estimates), list(ci95s))
    fixed = {a: v for a, v in lines[0].items() if a != axis}
    theory = theory_exponent(refine_axis, axis, fixed)
    interval = fit["exponent_ci95"]
    agrees = None if theory is None or interval is None else interval[0] <= theory <= interval[1]
    return {"axis": axis, **fit, "theory_exponent": theory, "agrees": agrees}
