"""A worker's lease on the unit of a job it runs ("plan", or a batch index), and the unit's
time limit.

The lease (`jobmodel.leases`) is taken with SET NX, so a duplicate delivery of a unit that runs
elsewhere is dropped; a thread refreshes it every third of `lease_ttl_s` and it is deleted when
the unit ends, so a dead worker's lease expires within `lease_ttl_s` and the reaper
(`worker.reaper`) sends the unit again. The same thread watches the unit's time limit: past it,
the training loop's cancel callback says stop, and the task fails the job with the reason.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from jobmodel.settings import Settings
from jobmodel.store import JobStore

log = logging.getLogger(__name__)


class Lease:
    """A worker's claim on one unit of a job, alive while the worker is."""

    def __init__(self, store: JobStore, job_id: str, unit: str, settings: Settings) -> None:
        self.leases = store.leases
        self.name = f"{job_id}:{unit}"
        self.job_id, self.unit = job_id, unit
        self.token = secrets.token_hex(8)
        self.ttl_ms = int(settings.lease_ttl_s * 1000)
        self.time_limit = settings.batch_time_limit_s
        self.overdue = threading.Event()  # set past the time limit: the task should stop
        self._done = threading.Event()

    def acquire(self) -> bool:
        """False when another attempt holds the unit, or the job is gone (deleted)."""
        if not self.leases.acquire(self.job_id, self.unit, self.token, self.ttl_ms):
            return False
        threading.Thread(target=self._refresh, name=f"lease-{self.name}", daemon=True).start()
        return True

    def _refresh(self) -> None:
        deadline = time.monotonic() + self.time_limit
        while not self._done.wait(self.ttl_ms / 3000):
            if time.monotonic() > deadline:
                self.overdue.set()  # keep the lease a little: the task is stopping, not dead
            if time.monotonic() > deadline + 2 * self.ttl_ms / 1000:
                # It did not stop (stuck outside the training loop): give the unit up and
                # tell the reaper why, so the job fails instead of running forever.
                self.leases.mark_overdue(self.job_id, self.unit)
                return
            try:
                self.leases.refresh(self.job_id, self.unit, self.token, self.ttl_ms)
            except redis.RedisError:  # Redis away for a moment; the next beat retries
                log.warning("lease refresh failed for %s", self.name)

    def release(self) -> None:
        self._done.set()
        try:
            self.leases.release(self.job_id, self.unit, self.token)
        except redis.RedisError:  # it expires by itself
            log.warning("lease release failed for %s", self.name)


@contextmanager
def leased(
    store: JobStore, job_id: str, unit: str, settings: Settings
) -> Iterator[Lease | None]:
    """The unit's lease, or None when another live attempt holds it or the job was deleted
    (then skip the unit)."""
    lease = Lease(store, job_id, unit, settings)
    if not lease.acquire():
        yield None
        return
    try:
        yield lease
    finally:
        lease.release()
