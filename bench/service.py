"""Service benchmark: submit -> result latency of a tiny job, and jobs/s the API accepts.

    .venv/bin/python bench/service.py [--jobs 20] [--posts 200] [--clients 8]

Starts its own stack (Redis on a free port in a temp dir, the API, one worker) on loopback,
prints the figures, and stops everything. The accept rate uses `bench/load.py`'s load driver;
that benchmark also waits for every job of a bigger load to finish.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bolab.client import LabClient
from bolab.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import submit_load  # noqa: E402

TINY = {"n": 20, "d": 40, "width": 16, "n_test": 200, "max_steps": 2000, "seeds": 2}


def latency(client: LabClient, jobs: int) -> tuple[list[float], list[float]]:
    """Seconds from POST to having the full result JSON, one job at a time; and engine seconds
    (training in the worker), so the service's own share shows."""
    seconds, engine = [], []
    for seed in range(jobs):
        started = time.perf_counter()
        job_id = client.submit({**TINY, "seed": seed})["id"]
        job = client.wait(job_id, timeout=60, max_interval=0.01)
        assert job["status"] == "succeeded", job
        result = client.results(job_id)
        seconds.append(time.perf_counter() - started)
        engine.append(result["engine"]["wall_seconds"])
    return seconds, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    env = {"BOLAB_MAX_ACTIVE_JOBS": str(args.posts + 1)}  # the load queues them all at once
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), log_dir=Path(tmp) / "logs", env=env) as lab,
    ):
        with LabClient(lab.api.url) as client:
            latency(client, 2)  # warm-up: first imports, first connections
            seconds, engine = latency(client, args.jobs)
        load = submit_load(lab.api.url, args.posts, args.clients, TINY)
    print(f"tiny job {TINY}")
    ms = sorted(s * 1e3 for s in seconds)
    print(
        f"submit -> result latency over {args.jobs} jobs: median {statistics.median(ms):.0f} ms "
        f"(min {ms[0]:.0f}, max {ms[-1]:.0f}); training in the worker: median "
        f"{statistics.median(engine) * 1e3:.0f} ms"
    )
    print(
        f"accepted {args.posts} POSTs from {args.clients} clients: {load.rate:.0f} jobs/s "
        f"(p50 {load.percentile(0.5) * 1e3:.1f} ms, p99 {load.percentile(0.99) * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
