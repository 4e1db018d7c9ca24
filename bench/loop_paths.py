"""The compiled CPU loop's two step functions against each other, to place INCREMENTAL_MIN_N.

For each n (d = 2n, gamma = 5/n) and seed, trains the same run from the same products with the
direct step (each row's smaller side re-summed every step) and with the kept sums, best of
`--repeats` each, one after the other in this one process and thread; prints the totals per n
and their ratio.

    python bench/loop_paths.py [--sizes 200 300 400 600] [--seeds 2] [--repeats 2]
"""

from __future__ import annotations

import argparse

import torch
from loop_against import timed_train

from bo_engine import loop
from bo_engine.products import RunData, draw_run_data
from bo_engine.spec import Cell, JobSpec

PATHS = {"direct": 10**9, "kept sums": 0}  # INCREMENTAL_MIN_N that picks each step function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 300, 400, 600])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loop.warm_up()
    print(f"{'n':>6} {'direct s':>9} {'kept sums s':>12} {'direct / kept':>14}")
    for n in args.sizes:
        cell = JobSpec(n=n, d=2 * n, gamma=5 / n, max_steps=1_000_000).cells[0]
        totals = dict.fromkeys(PATHS, 0.0)
        for seed in range(args.seeds):
            data = draw_run_data(cell, seed)
            for name, threshold in PATHS.items():
                loop.INCREMENTAL_MIN_N = threshold
                totals[name] += min(
                    timed_train(loop, fresh_run(data, cell), cell.max_steps)[1]
                    for _ in range(args.repeats)
                )
        ratio = totals["direct"] / totals["kept sums"]
        print(f"{n:>6} {totals['direct']:>9.3f} {totals['kept sums']:>12.3f} {ratio:>14.2f}")


def fresh_run(data: RunData, cell: Cell) -> loop.LoopRun:
    return loop.LoopRun.of_products(data.gram, data.z0, data.y, cell.lr, cell.alpha, torch.float32)


if __name__ == "__main__":
    main()
