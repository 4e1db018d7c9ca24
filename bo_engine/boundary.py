"""Where a cell mean crosses a level along one axis: the estimate, its 95 % interval, and where
the next cell narrows it down.

Pure, on the cells of one line: their axis values, metric means and t 95 % intervals. Positions
are compared in the line's scale, t = x (linear) or t = log x (log).

- Estimate: the mean is interpolated linearly in t between the two adjacent cells whose means
  lie on either side of the level (regula falsi on the bracketing pair); where the means cross
  the level more than once, the median crossing is taken.
- Interval: the cells' interval bounds are interpolated linearly in t too; the 95 % interval of
  the crossing is the connected stretch around the estimate where the level lies between the
  interpolated bounds. If the mean is linear in t between neighbouring cells and each cell's
  interval covers its mean, the true crossing lies in that stretch; a bracket narrower than the
  tolerance keeps the linearity assumption local (`bench/adaptive.py` and the tests check the
  coverage on noisy synthetic curves).
- Next cell: the midpoint (in t) of the widest gap between neighbouring cells that overlaps the
  interval or is the bracket, while that gap is wider than half the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LineCell:
    """One cell of a line: its axis value, the metric's mean and 95 % interval."""

    x: float
    mean: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Crossing:
    """The crossing on one line, as far as its cells tell."""

    estimate: float | None
    ci95: tuple[float, float] | None
    bracket: tuple[float, float] | None  # the adjacent cells on either side of the level
    note: str | None


def to_scale(x: float, scale: str) -> float:
    return math.log(x) if scale == "log" else x


def from_scale(t: float, scale: str) -> float:
    return math.exp(t) if scale == "log" else t


def find_crossing(cells: list[LineCell], level: float, scale: str) -> Crossing:
    """The crossing of `level` by the cell means (cells sorted by x), with its interval."""
    above = [c.mean >= level for c in cells]
    brackets = [i for i in range(len(cells) - 1) if above[i] != above[i + 1]]
    if not brackets:
        side = "above" if above[0] else "below"
        note = f"level {level:g} never crossed: every cell mean is {side} it on this line"
        return Crossing(None, None, None, note)
    i = brackets[(len(brackets) - 1) // 2]
    a, b = cells[i], cells[i + 1]
    ta, tb = to_scale(a.x, scale), to_scale(b.x, scale)
    t_est = ta + (level - a.mean) * (tb - ta) / (b.mean - a.mean)
    lo, hi = _interval_around(cells, level, scale, t_est)
    estimate = from_scale(t_est, scale)
    return Crossing(estimate, (lo, hi), (a.x, b.x), _monotonicity_note(cells, level))


def _interval_around(
    cells: list[LineCell], level: float, scale: str, t_est: float
) -> tuple[float, float]:
    """The connected stretch around t_est where lower(t) <= level <= upper(t), the cells'
    interval bounds interpolated linearly in t; returned in x."""
    pieces = []  # (t_lo, t_hi) per segment where the level is inside the band
    for a, b in zip(cells, cells[1:], strict=False):
        ta, tb = to_scale(a.x, scale), to_scale(b.x, scale)
        upper = _where_at_least(a.ci95[1], b.ci95[1], level)  # upper >= level
        lower = _where_at_least(-a.ci95[0], -b.ci95[0], -level)  # lower <= level
        if upper and lower and max(upper[0], lower[0]) <= min(upper[1], lower[1]):
            s0, s1 = max(upper[0], lower[0]), min(upper[1], lower[1])
            pieces.append((ta + s0 * (tb - ta), ta + s1 * (tb - ta)))
    lo = hi = t_est
    for t0, t1 in pieces:  # segments are in order: grow the stretch while pieces touch it
        if t0 <= hi + 1e-12 and t1 >= hi:
            hi = t1
    for t0, t1 in reversed(pieces):
        if t1 >= lo - 1e-12 and t0 <= lo:
            lo = t0
    return from_scale(lo, scale), from_scale(hi, scale)


def _where_at_least(va: float, vb: float, level: float) -> tuple[float, float] | None:
    """The s in [0, 1] where va + s (vb - va) >= level, as an interval, or None."""
    if va >= level and vb >= level:
        return (0.0, 1.0)
    if va < level and vb < level:
        return None
    s = (level - va) / (vb - va)
    return (s, 1.0) if vb >= level else (0.0, s)


def _monotonicity_note(cells: list[LineCell], level: float) -> str | None:
    """A note when the cells' intervals show the mean is not monotone: a cell surely on one
    side of the level beyond a cell surely on the other side, against the line's direction."""
    rising = cells[-1].mean >= cells[0].mean
    sure = [(c.x, c.ci95[0] > level, c.ci95[1] < level) for c in cells]
    for i, (xi, above_i, below_i) in enumerate(sure):
        for xj, above_j, below_j in sure[i + 1 :]:
            if (above_i and below_j) if rising else (below_i and above_j):
                return (
                    f"not monotone: the mean is surely {'above' if rising else 'below'} the "
                    f"level at {xi:g} and surely {'below' if rising else 'above'} it at {xj:g}"
                )
    return None


def next_x(
    cells: list[LineCell], crossing: Crossing, scale: str, rel_tolerance: float
) -> float | None:
    """Where the next cell goes: the midpoint (in scale) of the widest gap that overlaps the
    crossing's interval or is its bracket, if that gap is wider than rel_tolerance/2 times the
    estimate; None when no such gap is left."""
    assert crossing.estimate is not None and crossing.ci95 is not None
    lo, hi = crossing.ci95
    gaps = [
        (a.x, b.x)
        for a, b in zip(cells, cells[1:], strict=False)
        if (a.x, b.x) == crossing.bracket or (b.x > lo and a.x < hi)
    ]
    wide = [g for g in gaps if g[1] - g[0] > rel_tolerance * abs(crossing.estimate) / 2]
    if not wide:
        return None
    a, b = max(wide, key=lambda g: to_scale(g[1], scale) - to_scale(g[0], scale))
    return from_scale((to_scale(a, scale) + to_scale(b, scale)) / 2, scale)


def converged(crossing: Crossing, rel_tolerance: float) -> bool:
    """Whether the interval and the bracket are both narrower than rel_tolerance * estimate."""
    if crossing.estimate is None or crossing.ci95 is None or crossing.bracket is None:
        return False
    bound = rel_tolerance * abs(crossing.estimate)
    lo, hi = crossing.ci95
    return hi - lo < bound and crossing.bracket[1] - crossing.bracket[0] < bound
