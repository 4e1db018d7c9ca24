"""Scaling benchmark: how a run's cost grows with n at d = 2n, gamma = 5/n (the paper's shape).

For each n, in a fresh process of its own (so that its peak RSS is its own), trains the seeds of
one cell through `bo_engine.runner.run_spec` (the `bolab run --local` path, no baseline) with
`--threads` threads, and prints steps per run, seconds per step, seconds per run (engine wall
time x threads / runs: the core-seconds of one run) and the process's peak RSS; then the fitted
exponent of seconds per run against n (least squares on the logs).

`--engine PATH` imports `bo_engine` from another checkout (e.g. a worktree of main), so that two
engines are measured side by side in one setup; `--sizes` picks the n, `--big` adds n = 3200.

    python bench/scale.py [--engine PATH] [--sizes 100 200 ...] [--big] [--seeds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

SIZES = [100, 200, 400, 800, 1600]
BIG = 3200


def one(n: int, seeds: int, threads: int, d_over_n: int) -> dict:
    """Train one cell in this process; its figures as a dict."""
    import resource
    import time

    import torch

    from bo_engine import loop
    from bo_engine.runner import run_spec
    from bo_engine.spec import JobSpec

    torch.set_num_threads(threads)
    loop.warm_up()  # compile or load both step functions of the CPU loop before the clock starts
    spec = JobSpec(
        n=n,
        d=d_over_n * n,
        gamma=5 / n,
        seeds=seeds,
        max_margin_baseline=False,
        max_steps=1_000_000,
    )
    started = time.perf_counter()
    result = run_spec(spec)
    seconds = time.perf_counter() - started
    runs = result["cells"][0]["runs"]
    steps = [r["steps"] for r in runs]
    import bo_engine

    return {
        "engine": str(Path(bo_engine.__file__).parent.parent),
        "n": n,
        "d": d_over_n * n,
        "steps": steps,
        "seconds": seconds,
        "core_seconds_per_run": seconds * threads / len(runs),
        "seconds_per_step": seconds * threads / sum(steps),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(n: int, args: argparse.Namespace) -> dict:
    """`one(n)` in a fresh interpreter with the chosen engine on its path."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.engine:
        env["PYTHONPATH"] = str(Path(args.engine).resolve())
        env["NUMBA_CACHE_DIR"] = "/tmp/bolab-scale-numba-" + Path(args.engine).resolve().name
    cmd = [
        sys.executable,
        __file__,
        "--one",
        str(n),
        "--seeds",
        str(args.seeds),
        "--threads",
        str(args.threads),
        "--d-over-n",
        str(args.d_over_n),
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def exponent(rows: list[dict]) -> float:
    """Slope of log(seconds per run) against log(n), least squares."""
    xs = [math.log(r["n"]) for r in rows]
    ys = [math.log(r["core_seconds_per_run"]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="a checkout whose bo_engine to measure")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--big", action="store_true", help=f"add n = {BIG}")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d-over-n", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.seeds, args.threads, args.d_over_n)))
        return
    sizes = args.sizes + ([BIG] if args.big else [])
    print(f"engine {args.engine or 'this checkout'}, {args.seeds} seeds, {args.threads} thread(s)")
    print(
        f"{'n':>6} {'d':>7} {'steps per run':>16} {'s per step':>11} {'s per run':>10} "
        f"{'peak RSS MB':>12}"
    )
    rows = []
    for n in sizes:
        r = measure(n, args)
        rows.append(r)
        steps = "-".join(str(s) for s in (min(r["steps"]), max(r["steps"])))
        print(
            f"{n:>6} {r['d']:>7} {steps:>16} {r['seconds_per_step'] * 1e6:>9.1f}us "
            f"{r['core_seconds_per_run']:>10.3f} {r['peak_rss_mb']:>12.0f}",
            flush=True,
        )
    if len(rows) > 1:
        print(f"fitted exponent of seconds per run vs n: {exponent(rows):.2f}")


if __name__ == "__main__":
    main()
