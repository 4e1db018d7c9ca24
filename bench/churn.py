"""Where the incremental loop's time goes: how the active set and the rows' patterns change from
one GD step to the next (the numbers `bo_engine.loop`'s kept sums are designed around).

    python bench/churn.py [--n 800] [--phases 10]

Trains one run (d = 2n, gamma = 5/n, seed 0, float64) by plain full-batch GD in numpy, one step
at a time, and prints per phase of the run, averaged per step: |A|; the points that enter or
leave A; the changes of the P_j = {i in A : z_ji > 0} (rows of G a loop keeping each row's sum
over P_j adds); and the exceptions of the points that enter or leave A (rows j whose sign of
z_ji differs from that of a_j y_i: rows of G the loop keeping class sums plus exceptions adds,
besides one per point for its class sum).
"""

from __future__ import annotations

import argparse

import numpy as np

from bo_engine.model import outer_weights
from bo_engine.products import draw_run_data
from bo_engine.spec import JobSpec


def churn(n: int) -> list[tuple[int, int, int, int]]:
    """Per step: (|A|, points entering or leaving A, changes of the P_j, their exceptions)."""
    cell = JobSpec(n=n, d=2 * n, gamma=5 / n, max_steps=1_000_000).cells[0]
    data = draw_run_data(cell, 0)
    gram, z, y = data.gram.numpy(), data.z0.numpy().copy(), data.y.numpy()
    a = outer_weights(z.shape[0]).numpy()
    aligned = (a[:, None] * y[None, :]) > 0
    before_a, before_p = np.zeros(n, bool), np.zeros(z.shape, bool)
    rows = []
    for _ in range(cell.max_steps):
        f = (a[:, None] * np.where(z > 0, z, cell.alpha * z)).sum(0)
        active = y * f < 1
        if (y * f).min() > 0:
            break
        pattern = (z > 0) & active[None, :]
        toggled = active != before_a
        exceptions = ((z > 0) != aligned)[:, toggled].sum()
        rows.append((active.sum(), toggled.sum(), (pattern != before_p).sum(), exceptions))
        before_a, before_p = active, pattern
        slopes = np.where(z[:, active] > 0, 1, cell.alpha) * a[:, None]
        z += slopes @ (cell.lr * y[active][:, None] * gram[active])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--phases", type=int, default=10)
    args = parser.parse_args()
    rows = np.array(churn(args.n), dtype=float)
    print(f"n = {args.n}, d = {2 * args.n}, gamma = 5/n: {len(rows)} steps; per step:")
    print(f"{'steps':>13} {'|A|':>7} {'A in/out':>9} {'P_j changes':>12} {'exceptions':>11}")
    for part in np.array_split(np.arange(len(rows)), args.phases):
        mean = rows[part].mean(axis=0)
        span = f"{part[0]}-{part[-1]}"
        print(f"{span:>13} {mean[0]:>7.1f} {mean[1]:>9.1f} {mean[2]:>12.1f} {mean[3]:>11.1f}")


if __name__ == "__main__":
    main()
