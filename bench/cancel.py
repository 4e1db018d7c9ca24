"""Cancel benchmark: seconds from a cancel to the end of the batch, at several sizes.

Each case trains one batch through `bo_engine.runner.batch_cells` (what a worker's task runs) in a
thread, with runs that never reach their stop rule (a tiny step size), asks it to cancel after a
delay, and times the rest: how long `batch_cells` takes to raise `Cancelled` after the cancel
callback first answers True. The engine asks that callback at most every 0.2 s
(CANCEL_POLL_SECONDS), and that wait is included; a worker adds at most its own flag-read
interval (BOLAB_CANCEL_POLL_INTERVAL_S, 0.2 s) on top. The delays are chosen to land while the
runs are drawing data, forming Gram products, or training. Every case is within the service's
default bounds; the cost model's estimates (`bo_engine.cost`) are printed with each case.

    python bench/cancel.py [--quick] [--case NAME ...]

Torch uses as many threads as the machine has cores, as a worker with one batch slot does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from typing import Any

import torch

from bo_engine.cost import job_cost
from bo_engine.loop import warm_up
from bo_engine.plan import plan_batches
from bo_engine.runner import Cancelled, batch_cells
from bo_engine.spec import JobSpec
from jobmodel.settings import Settings

# Runs that train until stopped: zero loss is never reached at this step size.
NEVER_STOPS = {"stop": "zero_loss", "lr": 1e-12, "max_margin_baseline": False}
# name -> (spec, seconds after the start at which to cancel)
CASES: dict[str, tuple[dict[str, Any], list[float]]] = {
    "1 run n=1000 width=512": (
        {"n": 1000, "d": 2000, "width": 512, "max_steps": 100_000, **NEVER_STOPS},
        [5.0, 15.0],
    ),
    "64 runs n=1500 d=20000": (
        {"n": 1500, "d": 20_000, "seeds": 64, "max_steps": 20_000, **NEVER_STOPS},
        [1.0, 10.0, 30.0],
    ),
    # The largest single run the default bounds admit: n = 5000, d = 100000 (inputs 4 GB).
    "1 run n=5000 d=100000": (
        {"n": 5000, "d": 100_000, "width": 2, "max_steps": 1000, "n_test": 1000, **NEVER_STOPS},
        [2.0, 20.0, 90.0],
    ),
    # The costliest GD step the bounds admit (n = 5000, width 226: max_stage_work, 1e10 units),
    # with d as small as the Gram form allows so that the run is training by the later cancels.
    "1 run n=5000 d=1250 width=226": (
        {"n": 5000, "d": 1250, "width": 226, "max_steps": 1000, "n_test": 1000, **NEVER_STOPS},
        [15.0, 30.0],
    ),
    # The plain form (d < n / 4) at n = 5000: data and W X^T products, no Gram matrix.
    "4 runs n=5000 d=1000 width=90 (plain)": (
        {"n": 5000, "d": 1000, "width": 90, "seeds": 4, "max_steps": 1000, **NEVER_STOPS},
        [3.0],
    ),
}
QUICK = ["1 run n=1000 width=512", "64 runs n=1500 d=20000"]


def cancel_after(spec: JobSpec, delay: float) -> tuple[float, int, bool]:
    """(seconds from the cancel to the batch's end, runs reported, batch ended by itself)."""
    batch = plan_batches(spec)[0]
    cancel = threading.Event()
    answered: list[float] = []  # when the callback first answered True
    reported: list[int] = []
    ended: list[float] = []

    def should_cancel() -> bool:
        if cancel.is_set() and not answered:
            answered.append(time.monotonic())
        return cancel.is_set()

    def work() -> None:
        with contextlib.suppress(Cancelled):
            batch_cells(
                spec,
                batch,
                device=torch.device("cpu"),
                on_runs_done=reported.append,
                should_cancel=should_cancel,
            )
        ended.append(time.monotonic())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(delay)
    asked = time.monotonic()
    cancel.set()
    thread.join()
    return ended[0] - asked, sum(reported), asked > ended[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--case", action="append", choices=list(CASES), help="only this case")
    args = parser.parse_args()
    names = args.case or (QUICK if args.quick else list(CASES))
    torch.set_num_threads(os.cpu_count() or 1)
    warm_up()
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'case':>38} {'cancel at s':>11} {'to end s':>9} {'runs done':>9}")
    bounds = Settings()
    for name in names:
        body, delays = CASES[name]
        spec = JobSpec.model_validate(body)
        cost = job_cost(spec, parallel_runs=bounds.max_parallel_runs)
        print(
            f"{name}: estimated peak {cost.peak_batch_bytes / 2**30:.1f} GiB "
            f"(bound {bounds.max_batch_bytes / 2**30:.0f}), one stage {cost.max_stage_work:.2g} "
            f"units (bound {bounds.max_stage_work:.2g}), work {cost.work:.2g} units (bound "
            f"{bounds.max_cost:.2g})"
        )
        for delay in delays:
            seconds, runs, by_itself = cancel_after(spec, delay)
            note = "  (ended before the cancel)" if by_itself else ""
            print(f"{name:>38} {delay:11.1f} {seconds:9.2f} {runs:9d}{note}", flush=True)


if __name__ == "__main__":
    main()
