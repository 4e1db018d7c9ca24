"""The job store's guarantees, against the real Redis: one-way status, idempotent writes."""

from __future__ import annotations

import pytest
from celery import Celery

from bolab.client import LabClient
from bolab.stack import RedisServer
from jobmodel import keys
from jobmodel.queue import PLAN_JOB, RUN_BATCH
from jobmodel.store import JobStatus, JobStore
from tests.helpers import TINY, compute_seconds

pytestmark = pytest.mark.timeout(60)


def new_job(store: JobStore, runs: int = 4) -> str:
    return store.create({"n": 20, "d": 40}, runs_total=runs, cells_total=2, queue="cpu").id


def test_status_moves_one_way(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.mark_running(job_id)
    assert not store.mark_running(job_id)  # already running: started_at is set once
    assert store.mark_failed(job_id, "boom")
    assert not store.mark_succeeded(job_id, {"device": "cpu"})  # a late batch cannot revive it
    assert not store.cancel(job_id)
    job = store.get(job_id)
    assert job is not None and job.status == JobStatus.failed and job.error == "boom"
    assert job.engine is None and job.finished_at is not None
    failed, _ = store.list(status=JobStatus.failed, limit=200)
    assert job_id in {j.id for j in failed}
    running, _ = store.list(status=JobStatus.running, limit=200)
    assert job_id not in {j.id for j in running}


def test_batch_writes_are_idempotent(store: JobStore) -> None:
    job_id = new_job(store, runs=4)
    store.set_batches_total(job_id, 2)
    store.set_batch_progress(job_id, 0, 1)
    store.set_batch_progress(job_id, 0, 2)  # absolute per batch: a re-run overwrites
    assert store.progress(job_id).runs_done == 2
    assert not store.finish_batch(job_id, 0, 2, 0.5)
    assert not store.finish_batch(job_id, 0, 2, 0.5)  # the same batch twice is still one
    assert store.progress(job_id).batches_done == 1
    assert store.finish_batch(job_id, 1, 2, 0.25)
    assert store.progress(job_id).runs_done == 4
    assert compute_seconds(store, job_id) == 0.75
    cell = {"index": 1, "params": {}, "runs": [], "summary": {}}
    store.put_cell(job_id, cell, {"index": 1})
    store.put_cell(job_id, cell, {"index": 1})
    assert store.cells(job_id) == [cell]


def test_close_if_done_closes_once_and_only_when_every_batch_is_done(store: JobStore) -> None:
    job_id = new_job(store, runs=4)
    assert not store.close_if_done(job_id)  # not planned yet
    store.set_batches_total(job_id, 2)
    assert store.mark_running(job_id)
    facts = {"version": "0", "torch": "x", "device": "cpu", "dtype": "float64"}
    store.finish_batch(job_id, 0, 2, 0.5, engine={**facts, "wall_seconds": 0.5})
    assert not store.close_if_done(job_id)  # batch 1 is still open
    store.finish_batch(job_id, 1, 2, 0.25, engine={**facts, "wall_seconds": 0.25})
    assert store.close_if_done(job_id)
    assert not store.close_if_done(job_id)  # the reaper or a redelivery, after the worker
    job = store.get(job_id)
    assert job is not None and job.status == JobStatus.succeeded
    assert job.engine == {**facts, "wall_seconds": 0.75}  # the job's total, not the batch's
    ends = [e for _, e in store.redis.xrange(keys.events(job_id)) if e["event"] == "end"]
    assert len(ends) == 1


def test_close_if_done_leaves_a_terminal_job_alone(store: JobStore) -> None:
    job_id = new_job(store, runs=2)
    store.set_batches_total(job_id, 1)
    store.finish_batch(job_id, 0, 2, 0.5, engine={"device": "cpu"})
    assert store.cancel(job_id)
    assert not store.close_if_done(job_id)
    job = store.get(job_id)
    assert job is not None and job.status == JobStatus.cancelled and job.engine is None


def test_unknown_job_transitions_nothing(store: JobStore) -> None:
    assert store.get("nope") is None
    assert not store.mark_running("nope")
    assert store.stop_requested("nope")  # a batch of a vanished job stops


def test_redelivered_tasks_change_nothing(
    lab: LabClient, store: JobStore, redis_server: RedisServer
) -> None:
    job_id = lab.submit(TINY)["id"]
    before = lab.wait(job_id, timeout=60)
    assert before["status"] == "succeeded"
    cells = store.cells(job_id)

    # Deliver the job's tasks again, as a broker does after a lost acknowledgement.
    broker = Celery(broker=redis_server.url)
    broker.send_task(PLAN_JOB, args=[job_id], queue="cpu")
    broker.send_task(RUN_BATCH, args=[job_id, 0], queue="cpu")
    marker = lab.submit(TINY)["id"]  # queued behind the duplicates on the same queue
    assert lab.wait(marker, timeout=60)["status"] == "succeeded"

    after = lab.status(job_id)
    assert after == before
    assert store.cells(job_id) == cells
