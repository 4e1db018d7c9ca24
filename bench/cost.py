"""The cost model (`bo_engine.cost`) against measurement: work, peak memory and result size.

Each shape pushes one admission bound (n, d, width, n_test, seeds, max_steps, grid cells, the
trajectory, an uninterruptible stage, a batch's memory) while the others stay small, and runs in
a fresh single-threaded process (`bolab run --local`'s `run_spec`), which reports its wall time,
peak RSS and result size. The model's work units become seconds through this machine's float64
GEMM rate on one core, measured here first. Prints the estimate and the measurement side by side:

    .venv/bin/python bench/cost.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from bo_engine.cost import job_cost
from bo_engine.spec import JobSpec

NEVER_STOPS = {"stop": "zero_loss", "lr": 1e-12}  # every step of max_steps, every point active
SHAPES = {
    "n=5000": {"n": 5000, "d": 1250, "width": 2, "max_steps": 1, "n_test": 1,
               "max_margin_baseline": False},
    "d=100000": {"n": 200, "d": 100_000, "width": 2, "max_steps": 1, "n_test": 1},
    "width=4096": {"n": 100, "d": 1000, "width": 4096, "max_steps": 20, "n_test": 100,
                   **NEVER_STOPS},
    "n_test=100000": {"n": 50, "d": 100, "width": 64, "max_steps": 1, "n_test": 100_000},
    "seeds=1000": {"n": 20, "d": 40, "width": 16, "max_steps": 100, "n_test": 100,
                   "seeds": 1000},
    "max_steps=200000": {"n": 100, "d": 200, "width": 64, "max_steps": 200_000, "n_test": 100,
                         "max_margin_baseline": False, **NEVER_STOPS},
    "float64 loop": {"n": 100, "d": 200, "width": 64, "max_steps": 100_000, "n_test": 100,
                     "max_margin_baseline": False, "dtype": "float64", **NEVER_STOPS},
    "cells=10000": {"d": 10, "width": 2, "max_steps": 10, "n_test": 10,
                    "grid": {"n": [10] * 100, "gamma": [0.1 + i / 1000 for i in range(100)]}},
    "trajectory=10000": {"n": 20, "d": 40, "width": 16, "max_steps": 9998, "record_every": 1,
                         "n_test": 100, **NEVER_STOPS},
    "stage n=5000 width=200": {"n": 5000, "d": 1250, "width": 200, "max_steps": 3,
                               "n_test": 1, "max_margin_baseline": False, **NEVER_STOPS},
    "baseline n=900": {"n": 900, "d": 20_000, "width": 2, "max_steps": 1, "n_test": 1},
    "memory width=2200": {"n": 100, "d": 100_000, "width": 2200, "max_steps": 1, "n_test": 1},
    "n=2000 d=100000": {"n": 2000, "d": 100_000, "width": 64, "max_steps": 1,
                        "n_test": 100_000, "max_margin_baseline": False},
}

CHILD = """
import json, resource, sys, time
from bo_engine.loop import warm_up
from bo_engine.runner import run_spec
from bo_engine.spec import JobSpec
warm_up()
spec = JobSpec.model_validate(json.loads(sys.argv[1]))
started = time.perf_counter()
result = run_spec(spec)
seconds = time.perf_counter() - started
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "rss": rss, "bytes": len(json.dumps(result))}))
"""


def gemm_rate() -> float:
    """float64 multiply-adds per second of one core on a large product (the unit of work)."""
    torch.set_num_threads(1)
    a = torch.randn(1500, 1500, dtype=torch.float64)
    a @ a
    started = time.perf_counter()
    for _ in range(5):
        a @ a
    return 5 * 1500**3 / (time.perf_counter() - started)


def measure(body: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(body)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="shape names to run")
    names = parser.parse_args().only or list(SHAPES)
    rate = gemm_rate()
    print(f"float64 GEMM on one core: {rate / 1e9:.2f} G multiply-adds/s (1 unit each)")
    print(f"{'shape':>18} {'est s':>8} {'meas s':>8} {'ratio':>6} {'est MB':>8} {'RSS MB':>8}"
          f" {'est KB':>8} {'res KB':>8}")
    for name in names:
        spec = JobSpec.model_validate(SHAPES[name])
        cost = job_cost(spec, parallel_runs=1)
        got = measure(SHAPES[name])
        est_s = cost.work / rate
        print(f"{name:>18} {est_s:8.2f} {got['seconds']:8.2f} {est_s / got['seconds']:6.2f}"
              f" {cost.peak_batch_bytes / 2**20:8.0f} {got['rss'] / 2**20:8.0f}"
              f" {cost.result_bytes / 1024:8.0f} {got['bytes'] / 1024:8.0f}", flush=True)


if __name__ == "__main__":
    main()
