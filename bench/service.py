"""Service benchmark: submit -> result latency of a tiny job, and jobs/s the API accepts.

    .venv/bin/python bench/service.py [--jobs 20] [--posts 200] [--clients 8]

Starts its own stack (Redis on a free port in a temp dir, the API, one worker) on loopback,
prints the figures, and stops everything.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bolab.client import LabClient
from bolab.stack import Stack

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


def accept_rate(url: str, posts: int, clients: int) -> tuple[float, list[float]]:
    """POST `posts` jobs from `clients` concurrent connections; jobs/s and per-POST latency."""
    per_client = [posts // clients + (i < posts % clients) for i in range(clients)]

    def run(count: int) -> list[float]:
        took = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(count):
                t = time.perf_counter()
                response = http.post("/v1/jobs", json=TINY)
                assert response.status_code == 202, response.text
                took.append(time.perf_counter() - t)
        return took

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        took = [t for part in pool.map(run, per_client) for t in part]
    return posts / (time.perf_counter() - started), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), log_dir=Path(tmp) / "logs") as lab:
        with LabClient(lab.api.url) as client:
            latency(client, 2)  # warm-up: first imports, first connections
            seconds, engine = latency(client, args.jobs)
        rate, took = accept_rate(lab.api.url, args.posts, args.clients)
    took.sort()
    print(f"tiny job {TINY}")
    ms = sorted(s * 1e3 for s in seconds)
    print(
        f"submit -> result latency over {args.jobs} jobs: median {statistics.median(ms):.0f} ms "
        f"(min {ms[0]:.0f}, max {ms[-1]:.0f}); training in the worker: median "
        f"{statistics.median(engine) * 1e3:.0f} ms"
    )
    print(
        f"accepted {args.posts} POSTs from {args.clients} clients: {rate:.0f} jobs/s "
        f"(p50 {took[len(took) // 2] * 1e3:.1f} ms, p99 {took[int(len(took) * 0.99)] * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
