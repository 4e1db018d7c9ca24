"""Probe latency under load: `/healthz` while many clients fetch big results at once.

    .venv/bin/python bench/health_under_load.py [--clients 45] [--megabytes 17] [--seconds 10]

Starts its own Redis and API on loopback (no worker: the job is written into the store as a
finished one), stores one succeeded job whose results are about `--megabytes` of JSON, then
`--clients` threads fetch those results over and over while one more thread opens a new
connection to `/healthz` every 20 ms (as a compose health check does). Prints p50 / p99 / max
probe latency without and with the load, and how many results were served meanwhile.
`tests/test_probes.py` drives the same load and probe.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bolab.stack import ApiServer, RedisServer
from jobmodel.store import JobStore

SPEC = {"n": 20, "d": 40, "width": 16, "n_test": 200, "max_steps": 2000, "seeds": 1}
FLOAT_BYTES = 20  # a random float and its separator, as JSON
CELLS = 50


def store_big_job(store: JobStore, megabytes: float, owner: str = "anonymous") -> str:
    """A succeeded job whose result document is about `megabytes` of JSON (random floats as
    trajectories, as `record_every` stores them); returns its id."""
    grid = {"gamma": [round(0.01 * (i + 1), 2) for i in range(CELLS)]}
    job = store.create({**SPEC, "grid": grid}, runs_total=CELLS, cells_total=CELLS,
                       queue="cpu", owner=owner)  # fmt: skip
    points = int(megabytes * 1e6 / FLOAT_BYTES / CELLS)
    rng = random.Random(0)
    for index, gamma in enumerate(grid["gamma"]):
        trajectory = [rng.random() for _ in range(points)]
        summary = {"index": index, "n": SPEC["n"], "gamma": gamma, "test_error_mean": 0.1}
        cell = {"index": index, "params": {**SPEC, "gamma": gamma}, "summary": summary,
                "runs": [{"seed": index, "trajectory": {"margin": trajectory}}]}  # fmt: skip
        store.put_cell(job.id, cell, summary)
    store.mark_running(job.id)
    store.mark_succeeded(job.id, {"wall_seconds": 0.0})
    return job.id


class ResultsLoad:
    """`clients` threads, each with its own connection, fetching `path` until stopped."""

    def __init__(self, url: str, path: str, clients: int) -> None:
        self.url, self.path, self.clients = url, path, clients
        self.served = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._fetch, daemon=True) for _ in range(clients)]

    def _fetch(self) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as client:
            while not self._stop.is_set():
                try:
                    with client.stream("GET", self.path) as response:
                        for _ in response.iter_raw(1 << 20):
                            pass
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, response = False, exc  # type: ignore[assignment]
                with self._lock:
                    if ok:
                        self.served += 1
                    else:
                        self.failed.append(repr(response))

    def __enter__(self) -> ResultsLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=300)


def probe_health(url: str, seconds: float, every: float = 0.02) -> list[float]:
    """Latencies of `/healthz` (seconds, a new connection each time) for `seconds`."""
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60, headers={"Connection": "close"}) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(every)
    return latencies


@contextmanager
def own_api(where: Path, **env: str) -> Iterator[tuple[ApiServer, JobStore]]:
    """A Redis of its own and an open API on it (no worker), and a store client."""
    redis = RedisServer(where / "redis", log_path=where / "redis.log")
    redis.start()
    api = ApiServer(redis.url, env=env, log_path=where / "api.log")
    store = JobStore.from_url(redis.url)
    try:
        api.start()
        yield api, store
    finally:
        store.redis.close()
        api.stop()
        redis.stop()


def _ms(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"p50 {statistics.median(ordered) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
        f"max {ordered[-1] * 1e3:.1f} ms over {len(ordered)} probes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=45)
    parser.add_argument("--megabytes", type=float, default=17.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--renders", type=int, default=None, help="BOLAB_MAX_RESULT_RENDERS")
    args = parser.parse_args()
    env = {"BOLAB_MAX_RESULT_RENDERS": str(args.renders)} if args.renders else {}
    with tempfile.TemporaryDirectory() as tmp, own_api(Path(tmp), **env) as (api, store):
        job_id = store_big_job(store, args.megabytes)
        path = f"/v1/jobs/{job_id}/results"
        size = len(httpx.get(f"{api.url}{path}", timeout=120).content)
        idle = probe_health(api.url, 2.0)
        with ResultsLoad(api.url, path, args.clients) as load:
            time.sleep(0.5)  # every client has its request in flight
            loaded = probe_health(api.url, args.seconds)
            served = load.served
    print(f"results document: {size / 1e6:.1f} MB; {args.clients} clients fetching it")
    print(f"/healthz idle:       {_ms(idle)}")
    print(f"/healthz under load: {_ms(loaded)}")
    print(f"results served during the probes: {served}; failed: {len(load.failed)}")


if __name__ == "__main__":
    main()
