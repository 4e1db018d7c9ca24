"""Celery tasks: plan a job into batches, run one batch through the engine, write the store.

Both tasks are idempotent. A task reads everything it needs from the store (the spec by job id),
skips work that is already done or no longer wanted, and writes results under keys owned by the
batch or the cell, so a re-delivered task overwrites instead of duplicating.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready

from bo_engine.plan import Batch, plan_batches
from bo_engine.rounds import round_spec
from bo_engine.spec import JobSpec
from jobmodel import events
from jobmodel.queue import PLAN_JOB, RUN_BATCH, plan_unit
from jobmodel.store import JobRecord, JobStore
from worker import heartbeat, reaper, rounds  # noqa: F401  (reaper, heartbeat: their signals)
from worker.batch import BatchRun
from worker.celery_app import celery_app, settings
from worker.lease import Lease, leased

log = logging.getLogger(__name__)


def _warm_engine() -> None:
    """Import torch and load the compiled CPU loop before the first task, so the first job does
    not pay for them."""
    import bo_engine.runner  # noqa: F401
    from bo_engine.loop import warm_up

    warm_up()


@worker_process_init.connect
def _warm_child(**_: Any) -> None:
    _warm_engine()  # prefork children: torch is imported after the fork, never before it


@worker_ready.connect
def _warm_in_process(sender: Any, **_: Any) -> None:
    # threads/solo pools run tasks in this process; CUDA is still untouched by the import.
    if "prefork" not in getattr(sender.controller.pool_cls, "__module__", "prefork"):
        _warm_engine()


@lru_cache(maxsize=1)
def store() -> JobStore:
    config = settings()
    return JobStore.from_url(config.redis_url, export_to_mlflow=bool(config.mlflow_tracking_uri))


@lru_cache(maxsize=64)
def _planned(job_id: str, spec_json: str) -> tuple[JobSpec, list[Batch]]:
    # A job's spec never changes once stored, so the parsed spec and its plan can be reused
    # by every batch of the job that this process runs.
    spec = JobSpec.model_validate_json(spec_json)
    return spec, plan_batches(spec)


def _load(job_id: str) -> tuple[JobSpec, list[Batch]] | None:
    raw = store().spec_json(job_id)
    return _planned(job_id, raw) if raw else None


@celery_app.task(name=PLAN_JOB)
def plan_job(job_id: str, round: int = 0) -> None:
    """Split a job into batches (cells that train together) and enqueue one task per batch;
    for an adaptive job, plan its round `round` (`worker.rounds`)."""
    # The lease tells the reaper this job's planning is alive (worker.lease).
    with leased(store(), job_id, plan_unit(round), settings()) as lease:
        if lease is not None:  # else another delivery is planning this round right now
            _plan(job_id, round)


def _plan(job_id: str, round: int) -> None:
    job = store().get(job_id)
    if job is None or job.terminal:
        return
    try:
        loaded = _load(job_id)
        assert loaded is not None
        spec, batches = loaded
        if spec.is_adaptive:
            rounds.plan(store(), job, spec, round, _send)
            return
    except redis.RedisError:
        raise  # the store, not the job, failed: left for redelivery
    except Exception as exc:  # a spec the engine cannot plan: fail the job, not the worker
        log.exception("planning job %s failed", job_id)
        store().mark_failed(job_id, f"planning failed: {type(exc).__name__}: {exc}")
        return
    store().set_batches_total(job_id, len(batches))
    for batch in batches:
        _send(RUN_BATCH, [job_id, batch.index], job.queue)


def _send(task: str, args: list[Any], queue: str) -> None:
    celery_app.send_task(task, args=args, queue=queue)


@celery_app.task(name=RUN_BATCH)
def run_batch(job_id: str, batch_index: int) -> None:
    """Train one batch; write progress, each cell as it finishes, and the job's end state."""
    # The lease tells the reaper this batch is alive, and says stop past the time limit.
    with leased(store(), job_id, str(batch_index), settings()) as lease:
        if lease is not None:  # else another delivery is running this batch right now
            _run_batch(job_id, batch_index, lease)


def _run_batch(job_id: str, batch_index: int, lease: Lease) -> None:
    jobs = store()
    job = jobs.get(job_id)
    if job is None or job.terminal:
        return
    if jobs.batch_done(job_id, batch_index):
        # A redelivery of a finished batch: its worker may have died before closing the job
        # (or queueing an adaptive job's next round).
        _after_last_batch(job, batch_index)
        return
    work = _batch_run(jobs, job, batch_index, lease)
    if work is None:
        return
    if jobs.mark_running(job_id):
        jobs.emit(job_id, events.STATUS, {"status": "running"})
    work.log("batch.started", runs=work.batch.runs)
    engine = _train(work)
    if engine is not None:
        _finish(work, engine)


def _batch_run(jobs: JobStore, job: JobRecord, batch_index: int, lease: Lease) -> BatchRun | None:
    """The delivery of batch `batch_index`: of the spec's batches, or of an adaptive job's
    round (None when no stored round has it)."""
    loaded = _load(job.id)
    assert loaded is not None
    spec, batches = loaded
    if not spec.is_adaptive:
        return BatchRun(jobs, settings(), job, spec, batches[batch_index], lease)
    plan = rounds.round_of(jobs, job.id, batch_index)
    if plan is None:
        return None
    batch = plan.batches[batch_index - plan.first_batch]
    view = round_spec(spec, plan.requests)
    return rounds.RoundBatchRun(jobs, settings(), job, view, batch, lease)  # type: ignore[arg-type]


def _after_last_batch(job: JobRecord, batch_index: int) -> None:
    """Every batch so far is done: close the job, or queue an adaptive job's next round (a
    duplicate of that step does nothing)."""
    if not job.adaptive:
        store().close_if_done(job.id)
        return
    plan = rounds.round_of(store(), job.id, batch_index)
    if plan is not None and len(store().done_batches(job.id)) >= (job.batches_total or 0):
        _send(PLAN_JOB, [job.id, plan.round + 1], job.queue)


def _train(work: BatchRun) -> dict[str, Any] | None:
    """Train the batch; its engine facts, or None when it stopped (cancel, time limit, error:
    the job's state says why)."""
    from bo_engine import runner  # torch: imported in worker processes only

    jobs, job_id, index = work.jobs, work.job.id, work.batch.index
    try:
        device = runner.resolve_device(work.spec.device)  # CUDA is first touched here
        work.train(runner, device)
    except (runner.Cancelled, SoftTimeLimitExceeded) as exc:
        jobs.set_batch_progress(job_id, index, work.runs_done)
        if work.lease.overdue.is_set() or isinstance(exc, SoftTimeLimitExceeded):
            limit = work.config.batch_time_limit_s
            jobs.mark_failed(job_id, f"batch {index} ran over its time limit of {limit:g} s")
        return None
    except redis.RedisError:
        # The store, not the job, failed (Redis restarting): leave the batch to a redelivery
        # (unacked message or the reaper) instead of failing a healthy job.
        log.warning("job %s batch %s: Redis unavailable, left for redelivery", job_id, index)
        raise
    except Exception as exc:  # the job fails with the reason; the worker lives on
        log.exception("job %s batch %s failed", job_id, index)
        jobs.mark_failed(job_id, f"batch {index}: {type(exc).__name__}: {exc}")
        return None
    finally:
        # Training time of every batch, finished or not: GD steps per second divide by it.
        wall = time.perf_counter() - work.started
        jobs.count("train_seconds_total", {"queue": work.job.queue}, float(wall))
        work.log("batch.ended", seconds=round(wall, 3))
    return runner.engine_info(device, work.spec.dtype, wall)


def _finish(work: BatchRun, engine: dict[str, Any]) -> None:
    """Record the batch done; the worker that finishes the last batch closes the job (the
    transition is atomic, so a re-delivered duplicate cannot close it twice). Should this
    process die first, the reaper closes the job from what finish_batch stored."""
    jobs, job_id, batch = work.jobs, work.job.id, work.batch
    last = jobs.finish_batch(job_id, batch.index, batch.runs, engine["wall_seconds"], engine)
    work.report_progress(batch.runs)
    if last:
        _after_last_batch(work.job, batch.index)
