"""Draining an outbox (`jobmodel.outbox`) from an API process, for webhooks and MLflow exports.

`Drain.run_forever` claims due job ids and handles each as a task of its own, at most
`concurrency` in flight. While a job is handled its claim is renewed every third of the lease,
so no other process takes it; if this process dies, the claim comes due again within the lease
and another API process picks it up (nothing is lost). A handler answers what to do next:
settle with an outcome, try again later (not an attempt), or a failed attempt, which is retried
after `backoff_s`, doubling, until `max_attempts`, then settled as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import redis

from jobmodel.outbox import Channel, Outbox
from jobmodel.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settle:
    """Done: out of the outbox, `result` (and `fields`) in the job record."""

    result: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Later:
    """Not now, and not an attempt: due again in `delay_s`."""

    delay_s: float


@dataclass(frozen=True)
class Failed:
    """Attempt number `attempt` failed: retry after the backoff, or give up at the most."""

    attempt: int
    outcome: str


Decision = Settle | Later | Failed


@dataclass(frozen=True)
class Pace:
    concurrency: int  # jobs handled at once by this process
    lease_s: float  # how long a claim holds unless renewed
    poll_s: float  # how often to look for due jobs
    max_attempts: int
    backoff_s: float  # first retry delay; doubles


class Drain:
    """Subclasses name their `channel` and implement `handle`; `session` may open what every
    handling shares (an HTTP client) for as long as the drain runs."""

    channel: Channel

    def __init__(self, store: JobStore, pace: Pace) -> None:
        self.store, self.pace = store, pace
        self.outbox = Outbox(store, self.channel)
        self._flying: set[str] = set()  # job ids handled in this process now

    async def handle(self, job_id: str) -> Decision:
        raise NotImplementedError

    def session(self) -> contextlib.AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()

    async def run_forever(self) -> None:
        async with self.session(), asyncio.TaskGroup() as handlings:
            while True:
                for job_id in await self._claim_free():
                    self._flying.add(job_id)
                    handlings.create_task(self._guarded(job_id))
                await asyncio.sleep(self.pace.poll_s)

    async def _claim_free(self) -> list[str]:
        free = self.pace.concurrency - len(self._flying)
        if free <= 0:
            return []
        try:
            due = await asyncio.to_thread(self.outbox.claim, free, self.pace.lease_s)
        except redis.RedisError:
            log.warning("%s outbox unreachable; retrying", self.channel.field, exc_info=True)
            return []
        # One whose lease ran out while it is still in flight here settles when it ends.
        return [job_id for job_id in due if job_id not in self._flying]

    async def _guarded(self, job_id: str) -> None:
        done = asyncio.Event()
        renewing = asyncio.create_task(self._renew(job_id, done))
        try:
            decision = await self.handle(job_id)
            done.set()
            await renewing  # a renewal under way lands before the decision, never after
            await asyncio.to_thread(self._apply, job_id, decision)
        # One job's surprise must not end the drain for all: log it; its claim's lease runs
        # out and it is tried again.
        except Exception:
            log.exception("%s of job %s failed", self.channel.field, job_id)
        finally:
            done.set()
            self._flying.discard(job_id)

    async def _renew(self, job_id: str, done: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.pace.lease_s / 3)
            if done.is_set():
                return
            try:
                await asyncio.to_thread(self.outbox.renew, job_id, self.pace.lease_s)
            except redis.RedisError:
                log.warning("could not renew the claim on job %s", job_id, exc_info=True)

    def _apply(self, job_id: str, decision: Decision) -> None:
        if isinstance(decision, Settle):
            self.outbox.settle(job_id, decision.result, **decision.fields)
        elif isinstance(decision, Later):
            self.outbox.reschedule(job_id, decision.delay_s)
        elif decision.attempt >= self.pace.max_attempts:
            self.outbox.settle(job_id, f"failed after {decision.attempt}: {decision.outcome}")
        else:
            self.outbox.reschedule(job_id, self.pace.backoff_s * 2 ** (decision.attempt - 1))
