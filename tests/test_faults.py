"""Faults injected for real into a stack of its own (Redis, API, worker).

- A worker SIGKILLed in the middle of a batch: once a worker runs again, the job completes with
  every run exactly once, within the bound the reaper guarantees (worker.reaper).
- A batch over its time limit fails its job with the reason; nothing stays running.
- Redis stopped (SIGTERM) and started again on its AOF: records and results intact, queued jobs
  run, and the worker that was running keeps consuming new jobs.
- The API restarted: nothing lost, nothing duplicated (idempotency keys survive it too).

Short leases here (3 s) keep the suite fast; the production defaults give the bound in the
README. Bound asserted: lease + grace + 3 reaper intervals (the lock) + start-up + training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from jobmodel import keys
from jobmodel.store import JobStore
from tests.helpers import ENDLESS, TINY, OwnLab, ended, eventually, restart
from worker.broker import broker_view

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

# Two batches (two widths), each a few seconds of training on a 2-core CPU.
STEADY = {
    **TINY,
    "stop": "zero_loss",
    "lr": 1e-12,  # never reaches zero loss: every run takes all of max_steps
    "max_steps": 500_000,
    "max_margin_baseline": False,
    "grid": {"width": [16, 32]},
}


class Lab(OwnLab):
    """The suite's lab, with one prefork worker running (tests replace or kill it)."""

    def __init__(self, where: Path) -> None:
        super().__init__(where)
        self.worker = self.new_worker()
        self.worker.start()

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def stop(self) -> None:
        self.worker.stop()
        super().stop()


@pytest.fixture(scope="module")
def fault_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("faults"))
    yield lab
    lab.stop()


def assert_complete(lab: Lab, job_id: str, spec: dict) -> None:
    """Every cell present once, each with exactly its seeds, once each."""
    result = lab.client.results(job_id)
    widths = spec.get("grid", {}).get("width", [spec.get("width")])
    assert [c["index"] for c in result["cells"]] == list(range(len(widths)))
    for cell in result["cells"]:
        seeds = [run["seed"] for run in cell["runs"]]
        assert sorted(seeds) == list(range(spec["seeds"])), seeds


def test_worker_sigkill_mid_batch_loses_nothing(fault_lab: Lab) -> None:
    lab = fault_lab
    job_id = lab.client.submit(STEADY)["id"]
    with lab.store() as r:
        eventually(lambda: r.exists(keys.lease(job_id, "0")), timeout=60)  # batch 0 running
        time.sleep(0.3)  # inside the batch
        lab.worker.kill()  # SIGKILL the worker and its pool children
        assert lab.client.status(job_id)["status"] == "running"
        killed_at = time.monotonic()
        lab.worker = lab.new_worker()
        lab.worker.start()
        available = time.monotonic()
        # The reaper's guarantee: every unfinished batch is running or at the head of its queue
        # within lease 3 + grace 3 + lock 1.5 + sweep 0.5 s of the kill / of a worker being up.
        eventually(lambda: all_units_live(r, job_id), timeout=10, every=0.2)
        back = time.monotonic() - max(available, killed_at + 8)
        job = ended(lab.client, job_id, 120)  # then training, which a loaded CI box makes slow
        assert job["status"] == "succeeded", job.get("error")
        attempts = r.hgetall(keys.attempts(job_id))
    assert back < 2.0, f"batches back {back:.1f} s after the bound"
    assert_complete(lab, job_id, STEADY)
    assert int(attempts["0"]) == 2  # the killed delivery and its requeue, nothing more
    assert job["progress"]["runs_done"] == job["progress"]["runs_total"] == 4


def all_units_live(r: redis.Redis, job_id: str) -> bool:
    """Each unfinished batch is held by a live lease or waiting in a queue; none orphaned."""
    view = broker_view(r)
    done = set(r.hkeys(keys.batches(job_id)))
    units = [str(b) for b in range(int(r.hget(keys.job(job_id), "batches_total")))]
    return all(
        u in done or r.exists(keys.lease(job_id, u)) or (job_id, u) in view.waiting for u in units
    )


def test_batch_over_its_time_limit_fails_its_job(fault_lab: Lab) -> None:
    lab = fault_lab
    lab.worker.stop()
    lab.worker = lab.new_worker(BOLAB_BATCH_TIME_LIMIT_S="2")
    lab.worker.start()
    try:
        job_id = lab.client.submit(ENDLESS)["id"]
        job = ended(lab.client, job_id, 30)
        assert job["status"] == "failed"
        assert job["error"] == "batch 0 ran over its time limit of 2 s"
    finally:
        lab.worker.stop()
        lab.worker = lab.new_worker()
        lab.worker.start()


def test_job_held_by_a_dead_worker_fails_after_max_attempts(fault_lab: Lab) -> None:
    """A batch that kills its worker every time must not loop forever."""
    lab = fault_lab
    job_id = lab.client.submit({**ENDLESS, "seed": 11})["id"]
    with lab.store() as r:
        eventually(lambda: r.exists(keys.lease(job_id, "0")), timeout=60)
        r.hset(keys.attempts(job_id), "0", 99)  # as if it had crashed its worker 99 times
        lab.worker.kill()
        lab.worker = lab.new_worker()
        lab.worker.start()
        job = ended(lab.client, job_id, 30)
    assert job["status"] == "failed"
    assert "batch 0 was started 99 times and never finished" in job["error"]


def test_redis_restart_keeps_everything_and_workers_keep_consuming(fault_lab: Lab) -> None:
    lab = fault_lab
    done = lab.client.submit(TINY)["id"]
    assert ended(lab.client, done, 60)["status"] == "succeeded"
    before = lab.client.results(done)
    busy = lab.client.submit(STEADY)["id"]  # occupies the one worker ...
    queued = [lab.client.submit({**TINY, "seed": s})["id"] for s in range(3)]  # ... these wait
    time.sleep(1.0)
    worker_pid = lab.worker.proc.pid if lab.worker.proc else None
    lab.redis.stop()  # SIGTERM: Redis writes its AOF and exits
    time.sleep(1.0)
    lab.redis.start()
    assert lab.worker.alive and lab.worker.proc and lab.worker.proc.pid == worker_pid
    assert lab.client.results(done) == before  # records and results survived
    for job_id in [busy, *queued]:
        job = ended(lab.client, job_id, 90)
        assert job["status"] == "succeeded", (job_id, job.get("error"))
    assert_complete(lab, busy, STEADY)
    after = lab.client.submit({**TINY, "seed": 99})["id"]  # the same worker takes new work
    assert ended(lab.client, after, 60)["status"] == "succeeded"
    with lab.store() as r:
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert r.config_get("appendonly")["appendonly"] == "yes"


def test_api_restart_loses_and_duplicates_nothing(fault_lab: Lab) -> None:
    lab = fault_lab
    submitted = {
        f"restart-{i}": lab.client.submit({**TINY, "seed": 40 + i}, idempotency_key=f"restart-{i}")
        for i in range(4)
    }
    listed_before = [j["id"] for j in lab.client.list(limit=200)["items"]]
    restart(lab.api)
    listed_after = [j["id"] for j in lab.client.list(limit=200)["items"]]
    assert listed_after[: len(listed_before)] == listed_before
    for idem, job in submitted.items():  # a client retrying across the restart
        again = lab.client.submit({**TINY, "seed": 40 + int(idem[-1])}, idempotency_key=idem)
        assert again["id"] == job["id"]
        assert ended(lab.client, job["id"], 60)["status"] == "succeeded"
    ids = [j["id"] for j in lab.client.list(limit=200)["items"]]
    assert len(ids) == len(set(ids)) == len(listed_before)
    assert httpx.get(f"{lab.api.url}/readyz").status_code == 200


def test_job_whose_batches_all_finished_is_closed_by_the_reaper(fault_lab: Lab) -> None:
    """A worker that dies (or loses Redis) after recording its job's last batch as done but
    before closing the job leaves it running with nothing left to run; the reaper closes it."""
    lab = fault_lab
    done = lab.client.submit({**TINY, "seed": 7})["id"]
    assert ended(lab.client, done, 60)["status"] == "succeeded"
    jobs = JobStore.from_url(lab.redis.url)
    try:
        source = jobs.get(done)
        assert source is not None and source.batches_total and source.engine
        # Exactly what the dead worker left: cells and every batch written, status running.
        # Created in the store, not through the API, so that no task of it is ever queued.
        job_id = jobs.create(
            source.spec, runs_total=source.runs_total, cells_total=source.cells_total, queue="cpu"
        ).id
        assert jobs.mark_running(job_id)
        jobs.set_batches_total(job_id, source.batches_total)
        for cell, row in zip(jobs.cells(done), jobs.summaries(done), strict=True):
            jobs.put_cell(job_id, cell, row)
        engine = {k: v for k, v in source.engine.items() if k != "wall_seconds"}
        runs = {int(b): int(n) for b, n in jobs.redis.hgetall(keys.progress(done)).items()}
        for batch, n in runs.items():
            jobs.finish_batch(job_id, batch, n, 0.5, engine=engine)
        left_at = time.monotonic()
        # Bound: the next sweep (0.5 s), or the reaper lock's lifetime (1.5 s) and a sweep
        # when the reaper changes hands; 2 s of slack for a loaded CI box.
        job = ended(lab.client, job_id, 10)
        took = time.monotonic() - left_at
        ends = [e for _, e in jobs.redis.xrange(keys.events(job_id)) if e["event"] == "end"]
    finally:
        jobs.redis.close()
    assert job["status"] == "succeeded", job.get("error")
    assert took < 4.0, f"closed {took:.1f} s after it was left"
    assert len(ends) == 1  # one end event: one process won the terminal transition
    result = lab.client.results(job_id)
    assert result["cells"] == lab.client.results(done)["cells"]
    assert result["engine"] == {**engine, "wall_seconds": 0.5 * len(runs)}
