"""How many seeds a cell gets next: a fixed count, or seeds to a target interval.

Pure: a function of the spec's seeds field and the cell's summary of the target metric (count,
std, t 95 % interval, as `bo_engine.results.describe` makes it), so any process can decide the
next round from what is stored. New seeds are the next seed numbers (`seed + runs so far`).
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

from bo_engine.spec import SeedsPolicy


def first_seeds(seeds: int | SeedsPolicy) -> int:
    """Seeds a new cell starts with."""
    return seeds.min if isinstance(seeds, SeedsPolicy) else seeds


def halfwidth(summary: dict[str, Any]) -> float | None:
    """Half the width of a metric summary's 95 % interval (None without an interval)."""
    ci = summary.get("ci95")
    return None if ci is None else (ci[1] - ci[0]) / 2


def seeds_to_add(seeds: int | SeedsPolicy, runs: int, summary: dict[str, Any]) -> int:
    """More seeds this cell needs now (0: it has enough), given its `runs` so far and the
    summary of the target metric over them.

    A fixed count tops up to that count. A policy tops up to `min`, then, while the interval's
    half-width h is over the target h* and the cell has fewer than `max` seeds, asks for the
    count the current spread s predicts, (t_{0.975, k-1} s / h*)^2, growing by at most a doubling
    per round (a spread estimated from few seeds is itself noisy) and by at least one seed.
    """
    if not isinstance(seeds, SeedsPolicy):
        return max(0, seeds - runs)
    if runs < seeds.min:
        return seeds.min - runs
    width, count = halfwidth(summary), summary.get("count", 0)
    if runs >= seeds.max or width is None or count < 2:
        return 0 if runs >= seeds.max else min(seeds.max - runs, max(1, runs))
    target = seeds.target.ci95_halfwidth
    if width <= target:
        return 0
    t = float(stats.t.ppf(0.975, count - 1))
    needed = math.ceil((t * summary["std"] / target) ** 2)
    return min(seeds.max - runs, max(1, min(needed - count, runs)))
