"""Load benchmark: accepted jobs/s and submit latency with many concurrent clients.

    .venv/bin/python bench/load.py [--jobs 300] [--clients 16] [--workers 1 --concurrency 2]

Starts its own stack on loopback (Redis in a temp dir, the API, a worker), submits `--jobs`
small jobs from `--clients` threads, each with its own connection, then waits until every job
has succeeded. Prints accepted jobs/s, p50/p99 submit latency, and how long the queue took to
drain. `tests/test_load.py` drives the same `submit_load` and checks every job.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bolab.stack import Stack

SMALL = {"n": 16, "d": 32, "width": 8, "n_test": 50, "max_steps": 500, "seeds": 1,
         "max_margin_baseline": False}  # fmt: skip


@dataclass
class Load:
    ids: list[str]  # in submission order
    latencies: list[float]  # seconds per POST
    seconds: float  # wall time of the whole submission phase

    @property
    def rate(self) -> float:
        return len(self.ids) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def submit_load(url: str, jobs: int, clients: int, spec: dict[str, Any] | None = None) -> Load:
    """POST `jobs` specs (seed i for job i, so each is distinct) from `clients` threads."""
    spec = spec or SMALL
    per_client = [list(range(c, jobs, clients)) for c in range(clients)]

    def client(seeds: list[int]) -> list[tuple[int, str, float]]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for seed in seeds:
                started = time.perf_counter()
                response = http.post("/v1/jobs", json={**spec, "seed": seed})
                took = time.perf_counter() - started
                response.raise_for_status()
                out.append((seed, response.json()["id"], took))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = sorted(row for part in pool.map(client, per_client) for row in part)
    seconds = time.perf_counter() - started
    return Load([r[1] for r in rows], [r[2] for r in rows], seconds)


def wait_all(url: str, ids: list[str], timeout: float) -> dict[str, str]:
    """Status of every job once none is queued or running (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                status[job_id] = http.get(f"/v1/jobs/{job_id}").json()["status"]
                if status[job_id] in ("queued", "running"):
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(0.5)
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2, help="worker concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"BOLAB_MAX_ACTIVE_JOBS": str(args.jobs + 1)}
        stack = Stack(Path(tmp), api_port=None, concurrency=args.concurrency, env=env)
        with stack:
            load = submit_load(stack.api.url, args.jobs, args.clients)
            started = time.perf_counter()
            statuses = wait_all(stack.api.url, load.ids, timeout=600)
            drained = time.perf_counter() - started
    ok = sum(s == "succeeded" for s in statuses.values())
    print(f"{args.jobs} jobs from {args.clients} clients (loopback, worker concurrency "
          f"{args.concurrency})")  # fmt: skip
    print(f"  accepted: {load.rate:.0f} jobs/s ({load.seconds:.2f} s for all)")
    print(f"  submit latency: p50 {load.percentile(0.5) * 1000:.1f} ms, "
          f"p99 {load.percentile(0.99) * 1000:.1f} ms, "
          f"mean {statistics.fmean(load.latencies) * 1000:.1f} ms")  # fmt: skip
    print(f"  all done {drained:.1f} s after the last submit: {ok}/{args.jobs} succeeded")


if __name__ == "__main__":
    main()
