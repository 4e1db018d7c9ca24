"""Accuracy of the cost estimate: predicted wall seconds [lo, hi] against measured ones.

For the two paper examples and three specs outside the paper's range, prints the dry run's
prediction for this machine (`bolab run --local --dry-run`: the shipped model, this machine's
cores) and the measured wall seconds of `bo_engine.runner.run_spec` (the `bolab run --local`
path: the worker's `plan_batches` + `batch_cells`), best of --repeats, after a warm-up.

    env -u OMP_NUM_THREADS .venv/bin/python -m bench.estimate [--repeats 2] [--only NAME]

The machine is shared: measured times are noisy (best of repeats is reported).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from bo_engine.spec import JobSpec
from bolab.local_cli import local_estimate

OUTSIDE: dict[str, dict[str, Any]] = {
    "larger n (400)": {"n": 400, "d": 800, "grid": {"gamma": [0.005, 0.02]}, "seeds": 3},
    "larger d/n (30)": {"n": 100, "grid": {"d_over_n": [30], "gamma_times_n": [1, 5]},
                        "seeds": 5},
    "zero_loss": {"grid": {"n": [50, 100], "d_over_n": [2], "gamma_times_n": [5]},
                  "stop": "zero_loss", "seeds": 5},
}


def specs() -> dict[str, dict[str, Any]]:
    paper = {
        name: json.loads(open(f"examples/{name}.json").read())  # noqa: SIM115
        for name in ("paper_gamma", "paper_heatmap")
    }
    return {**paper, **OUTSIDE}


def measure(spec: JobSpec, repeats: int) -> float:
    from bo_engine.runner import run_spec

    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run_spec(spec)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default=None, help="one spec by name")
    args = parser.parse_args()
    from bo_engine.loop import warm_up

    warm_up()
    print(f"{'spec':<18} {'runs':>5} {'pred lo':>8} {'pred mid':>8} {'pred hi':>8} "
          f"{'measured':>8} {'meas/mid':>8}  in range")
    for name, body in specs().items():
        if args.only and name != args.only:
            continue
        spec = JobSpec.model_validate(body)
        lo, hi = local_estimate(spec)["seconds"]["cpu"]
        mid = math.sqrt(lo * hi)  # the point prediction: the ranges are symmetric in log
        wall = measure(spec, args.repeats)
        inside = "yes" if lo <= wall <= hi else "NO"
        print(f"{name:<18} {spec.runs_total:>5} {lo:>8.1f} {mid:>8.1f} {hi:>8.1f} "
              f"{wall:>8.1f} {wall / mid:>8.2f}  {inside}", flush=True)


if __name__ == "__main__":
    main()
