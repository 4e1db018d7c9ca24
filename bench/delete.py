"""Deletion benchmark: what deleting a big finished job costs Redis, and what it gives back.

    .venv/bin/python bench/delete.py [--cells 10000] [--cell-kb 10] [--jobs 1000]

Starts a Redis of its own (temp dir, free port), stores one finished job whose results are
`cells` cells of about `cell-kb` KB each, plus `jobs` small finished jobs, then prints: the
memory Redis uses before and after (`bolab_redis_memory_bytes` is this `used_memory`), the time
of `JobStore.delete` for the big job, the longest a concurrent PING waited meanwhile (other
clients are not stalled: the keys are UNLINKed, freed in the background), and the time of a
retention sweep over the small ones.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bolab.stack import RedisServer
from jobmodel import keys
from jobmodel.settings import Settings
from jobmodel.store import JobStatus, JobStore
from worker.reaper import RETENTION_BATCH, Reaper


def finished_job(store: JobStore, cells: int, cell_bytes: int) -> str:
    job = store.create({"n": 50}, runs_total=cells, cells_total=cells, queue="cpu")
    store.set_batches_total(job.id, 1)
    filler = "x" * cell_bytes
    pipe = store.redis.pipeline(transaction=False)
    for index in range(cells):
        pipe.hset(keys.cells(job.id), str(index), filler)
        pipe.hset(keys.summaries(job.id), str(index), filler[:200])
    pipe.execute()
    store.finish_batch(job.id, 0, cells, 1.0, engine={"device": "cpu"})
    assert store.close_if_done(job.id)
    return job.id


def longest_ping_during(url: str, action: Callable[[], object]) -> tuple[float, float]:
    """Seconds `action` took, and the longest PING another client waited from its start until
    0.5 s after it (the background free included)."""
    probe, pings, stop = JobStore.from_url(url), [], threading.Event()

    def ping() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            probe.redis.ping()
            pings.append(time.perf_counter() - started)

    thread = threading.Thread(target=ping)
    thread.start()
    started = time.perf_counter()
    action()
    took = time.perf_counter() - started
    time.sleep(0.5)
    stop.set()
    thread.join()
    return took, max(pings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--cell-kb", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as where:
        server = RedisServer(Path(where) / "redis")
        server.start()
        try:
            store = JobStore.from_url(server.url)
            big = finished_job(store, args.cells, int(args.cell_kb * 1024))
            used = store.redis.info("memory")["used_memory"]
            _, quiet = longest_ping_during(server.url, lambda: None)
            took, busy = longest_ping_during(server.url, lambda: store.delete(big))
            assert store.get(big) is None
            after = store.redis.info("memory")["used_memory"]
            print(f"big job: {args.cells} cells x {args.cell_kb:g} KB")
            print(f"  redis used_memory {used / 2**20:.1f} MiB before, {after / 2**20:.1f} after")
            print(f"  delete took {1000 * took:.1f} ms")
            print(f"  another client's longest PING: {1000 * busy:.1f} ms around the delete,")
            print(f"  {1000 * quiet:.1f} ms around nothing (this machine's noise)")

            for _ in range(args.jobs):
                job = store.create({"n": 20}, runs_total=1, cells_total=1, queue="cpu")
                store.transition(
                    job.id, JobStatus.succeeded, (JobStatus.queued,), finished_at=repr(time.time())
                )
            time.sleep(1.1)
            reaper = Reaper(store, Settings(retention_days=1 / 86400))
            started, deleted = time.perf_counter(), 0
            while batch := reaper.prune():
                deleted += len(batch)
            took = time.perf_counter() - started
            print(
                f"retention: {deleted} small jobs in {1000 * took:.0f} ms "
                f"({RETENTION_BATCH} per sweep, {deleted / RETENTION_BATCH:.0f} sweeps)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
