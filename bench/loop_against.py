"""The compiled CPU loop of this checkout against another checkout's, on the same data.

For each n (d = 2n, gamma = 5/n) and seed, both loops train the same run from the same products
(G, Z0, y: `bo_engine.products.draw_run_data` of this checkout), one after the other in this one
process and thread, so that they share the machine's load; prints the steps each took (equal up to
rounding) and their seconds, and the ratio of the totals per n.

    python bench/loop_against.py PATH [--sizes 200 800 1600] [--seeds 2] [--dtype float32]

PATH is a checkout (e.g. a git worktree of main) whose `bo_engine/loop.py` is the other loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from bo_engine import loop as this_loop
from bo_engine.model import outer_weights
from bo_engine.products import RunData, draw_run_data
from bo_engine.spec import JobSpec


def load_loop(checkout: str) -> ModuleType:
    path = Path(checkout).resolve() / "bo_engine" / "loop.py"
    spec = importlib.util.spec_from_file_location("other_loop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's on-disk cache looks the module up by name
    spec.loader.exec_module(module)
    module.warm_up()
    return module


def their_run(module: ModuleType, data: RunData, lr: float, alpha: float, dtype) -> object:
    """The other loop's run state from the products: its own `of_products` where it has one,
    else (older loops, whose fields are a subset of this one's) the fields of this loop's run."""
    if hasattr(module.LoopRun, "of_products"):
        return module.LoopRun.of_products(data.gram, data.z0, data.y, lr, alpha, dtype)
    mine = this_loop.LoopRun.of_products(data.gram, data.z0, data.y, lr, alpha, dtype)
    state = {k: getattr(mine, k) for k in module.LoopRun.__dataclass_fields__}
    state["z"], state["c"] = mine.z0.copy(), np.zeros_like(mine.z0)
    state["a"] = outer_weights(data.z0.shape[0], dtype).numpy()
    return module.LoopRun(**state)


def timed_train(module: ModuleType, run: object, max_steps: int) -> tuple[int, float]:
    started = time.perf_counter()
    steps, _ = module.train_run(
        run,
        max_steps=max_steps,
        zero_loss=False,
        record_every=None,
        record=lambda step: None,
        stop=threading.Event(),
    )
    return steps, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="a checkout whose bo_engine/loop.py to compare against")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 800, 1600])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    other = load_loop(args.other)
    this_loop.warm_up()
    print(
        f"{'n':>6} {'seed':>5} {'steps this':>11} {'steps other':>12} {'s this':>8} {'s other':>8}"
    )
    for n in args.sizes:
        cell = JobSpec(n=n, d=2 * n, gamma=5 / n, max_steps=1_000_000).cells[0]
        totals = [0.0, 0.0]
        for seed in range(args.seeds):
            data = draw_run_data(cell, seed)
            mine = this_loop.LoopRun.of_products(
                data.gram, data.z0, data.y, cell.lr, cell.alpha, dtype
            )
            theirs = their_run(other, data, cell.lr, cell.alpha, dtype)
            steps_mine, s_mine = timed_train(this_loop, mine, cell.max_steps)
            steps_theirs, s_theirs = timed_train(other, theirs, cell.max_steps)
            totals[0] += s_mine
            totals[1] += s_theirs
            print(
                f"{n:>6} {seed:>5} {steps_mine:>11} {steps_theirs:>12} {s_mine:>8.2f} "
                f"{s_theirs:>8.2f}",
                flush=True,
            )
        print(
            f"{n:>6} total: this {totals[0]:.2f} s, other {totals[1]:.2f} s, "
            f"{totals[1] / totals[0]:.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
