"""The reaper: no job is lost to a dead worker, and no job stays running forever.

Why not Celery alone: with `acks_late` a batch whose worker was SIGKILLed stays in the broker's
`unacked` hash until the visibility timeout (hours, since it must exceed the longest batch), and
a task killed by a hard time limit is acknowledged and gone. So:

- A worker running a unit of a job (its planning, "plan", an adaptive job's planning of round
  k, "plan:k", or batch i, "0", "1", ... numbered across rounds) holds its lease
  (`worker.lease`); a dead worker's lease expires within `lease_ttl_s`.
- The reaper (one at a time, under a Redis lock; a thread in every worker's main process, so it
  runs whenever a worker is up to take the work, even with the API down) looks at every queued
  or running job, every `reaper_interval_s`. For each unit that is not finished and has no live
  lease it finds the unit's task message in the broker (`worker.broker`): waiting in a queue
  (fine), delivered but unacknowledged for over `orphan_grace_s` (its worker is dead: put it
  back at the head of its queue), or nowhere for `orphan_grace_s` (send it again). A unit
  started `max_attempts` times without finishing fails its job, with the reason. A job with
  every batch recorded done but still active (the last batch's worker died, or lost Redis,
  between recording the batch and closing the job) is closed as succeeded from the store
  (`JobStore.close_if_done`). An adaptive job with every batch so far done and its planner not
  done yet has its next planning step open: the reaper sends it like a lost unit.

Bound: a batch of a SIGKILLed worker is back in its queue at most lease_ttl_s + orphan_grace_s +
reaper_interval_s after the kill (35 s by default), or, when no worker was up, one reaper lock
lifetime (3 reaper_interval_s) after the first worker starts; it runs as soon as a worker is
free. A job left with all its batches done is closed at the next sweep: within reaper_interval_s,
or one lock lifetime more when the reaper changes hands. Tasks are idempotent, so a false alarm
costs a duplicate delivery, never a duplicate result.

Retention: with `retention_days` > 0, each sweep also deletes (`JobStore.delete`) terminal jobs
that finished longer ago than that, oldest first; the same lock makes one process act at a time.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from jobmodel.queue import PLAN_JOB, QUEUES, RUN_BATCH, plan_args, plan_unit
from jobmodel.settings import Settings
from jobmodel.store import Deletion, JobStore
from worker.broker import BrokerView, broker_view, restore

log = logging.getLogger(__name__)

RETENTION_BATCH = 100  # jobs deleted per sweep at most: one sweep stays short

Unit = tuple[str, str]  # (job id, "plan" or a batch index)


class Reaper:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.missing_since: dict[Unit, float] = {}  # units seen nowhere, and when

    def sweep(self) -> list[str]:
        """One look at every active job; returns what it did (for logs and tests)."""
        active = self.store.active_ids()
        if not active:
            self.missing_since.clear()
            return []
        view = broker_view(self.store.redis)
        actions: list[str] = []
        still_missing: dict[Unit, float] = {}
        for job_id in active:
            actions += self._check_job(job_id, view, still_missing)
        self.missing_since = still_missing
        return actions

    def _check_job(
        self, job_id: str, view: BrokerView, still_missing: dict[Unit, float]
    ) -> list[str]:
        """Each unfinished unit of the job with no live lease and no message waiting: fail the
        job, or put the unit back in its queue. Units found nowhere go into `still_missing`."""
        units = self._open_units(job_id)
        if not units:
            # Nothing left to run (or the job just ended): only closing can be missing.
            return [f"closed {job_id}"] if self.store.close_if_done(job_id) else []
        actions: list[str] = []
        for unit in units:
            if self.store.leases.held(job_id, unit) or (job_id, unit) in view.waiting:
                continue
            failure = self._failure(job_id, unit)
            if failure:
                self.store.mark_failed(job_id, failure)
                return [*actions, f"failed {job_id} {unit}"]
            action = self._requeue(job_id, unit, view, still_missing)
            if action:
                actions.append(action)
        return actions

    def _failure(self, job_id: str, unit: str) -> str | None:
        """Why the unit fails its job (over its time limit, or started too often), or None."""
        limit = self.settings.batch_time_limit_s
        attempts, overdue = self.store.leases.attempts(job_id, unit)
        name = f"batch {unit}"
        if unit.startswith("plan"):
            _, _, round = unit.partition(":")
            name = f"planning round {round}" if round else "planning"
        if overdue:
            return f"{name} ran over its time limit of {limit:g} s"
        if attempts >= self.settings.max_attempts:
            return (
                f"{name} was started {attempts} times and never finished (its worker "
                f"died or it ran over the time limit of {limit:g} s)"
            )
        return None

    def _requeue(
        self, job_id: str, unit: str, view: BrokerView, still_missing: dict[Unit, float]
    ) -> str | None:
        """Put back a unit whose every delivery is older than `orphan_grace_s` (its worker is
        dead), or send again one found nowhere for that long; None when it is too early."""
        grace = self.settings.orphan_grace_s
        delivered = view.delivered.get((job_id, unit), [])
        if delivered:
            if any(d.age_s <= grace for d in delivered):
                return None
            for d in delivered:
                restore(self.store.redis, d.tag)
            return f"restored {job_id} {unit}"
        first = self.missing_since.get((job_id, unit), time.monotonic())
        if time.monotonic() - first < grace:
            still_missing[(job_id, unit)] = first
            return None
        self._resend(job_id, unit)
        return f"resent {job_id} {unit}"

    def prune(self) -> list[str]:
        """Retention: delete up to RETENTION_BATCH terminal jobs that finished more than
        `retention_days` ago (0 = keep every job). Returns what it did."""
        days = self.settings.retention_days
        if days <= 0:
            return []
        cutoff = time.time() - days * 86400
        return [
            f"deleted {job_id} (finished over {days:g} days ago)"
            for job_id in self.store.finished_before(cutoff, RETENTION_BATCH)
            if self.store.delete(job_id) == Deletion.deleted
        ]

    def _open_units(self, job_id: str) -> list[str]:
        job = self.store.get(job_id)
        if job is None or job.terminal:
            return []
        if job.batches_total is None:
            return [plan_unit(0)]
        done = self.store.done_batches(job_id)
        units = [str(b) for b in range(job.batches_total) if b not in done]
        if units or not job.adaptive or job.rounds_done:
            return units
        return [plan_unit((job.round or 0) + 1)]  # an adaptive job's next round

    def _resend(self, job_id: str, unit: str) -> None:
        from worker.celery_app import celery_app

        job = self.store.get(job_id)
        queue = job.queue if job else QUEUES[0]
        if unit.startswith("plan"):
            celery_app.send_task(PLAN_JOB, args=plan_args(job_id, unit), queue=queue)
        else:
            celery_app.send_task(RUN_BATCH, args=[job_id, int(unit)], queue=queue)

    def run(self, stop: threading.Event) -> None:
        """Sweep every interval while holding the lock; any worker may hold it, one at a time."""
        token = secrets.token_hex(8)
        lock_ms = int(self.settings.reaper_interval_s * 3000)
        while not stop.wait(self.settings.reaper_interval_s):
            try:
                if self.store.leases.hold_reaper_lock(token, lock_ms):
                    for action in self.sweep():
                        log.warning("reaper: %s", action)
                    for action in self.prune():
                        log.info("reaper: %s", action)
            except Exception:  # Redis away for a moment: try again next interval
                log.warning("reaper sweep failed", exc_info=True)


_stop = threading.Event()


@worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    from worker.celery_app import settings

    config = settings()
    store = JobStore.from_url(
        config.redis_url, export_to_mlflow=bool(config.mlflow_tracking_uri)
    )
    reaper = Reaper(store, config)
    threading.Thread(target=reaper.run, args=(_stop,), name="bolab-reaper", daemon=True).start()


@worker_shutdown.connect
def _end(**_: Any) -> None:
    _stop.set()
