"""Outboxes: what finished jobs still owe the world (a webhook, an MLflow export), and when.

`jobmodel.events.job_ended` puts a job in an outbox. API processes claim due entries (one claim
per entry at a time, under a lease that expires if the claimer dies and that the claimer renews
while it works), count attempts, reschedule, and settle each with its outcome in the job record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from jobmodel import keys
from jobmodel.store import JobStore


@dataclass(frozen=True)
class Channel:
    """One kind of delivery: its due set, its attempt counts, the record field of its outcome."""

    due: str
    attempts: str
    field: str


WEBHOOK = Channel(keys.WEBHOOKS_DUE, keys.WEBHOOK_ATTEMPTS, "webhook")
MLFLOW = Channel(keys.MLFLOW_DUE, keys.MLFLOW_ATTEMPTS, "mlflow_export")

# Claim up to ARGV[3] due ids: push each one's score to ARGV[2] (the claim's lease), return them.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


class Outbox:
    def __init__(self, store: JobStore, channel: Channel = WEBHOOK) -> None:
        self.store, self.channel = store, channel
        self.redis: redis.Redis = store.redis
        self._claim = self.redis.register_script(_CLAIM)

    def claim(self, limit: int, lease_s: float) -> list[str]:
        """Up to `limit` due job ids, each held back from other claims for `lease_s`."""
        now = time.time()
        return list(self._claim(keys=[self.channel.due], args=[now, now + lease_s, limit]))

    def renew(self, job_id: str, lease_s: float) -> None:
        """Hold a claim `lease_s` longer (only while the entry is still in the outbox)."""
        self.redis.zadd(self.channel.due, {job_id: time.time() + lease_s}, xx=True)

    def url(self, job_id: str) -> str | None:
        return self.redis.hget(keys.job(job_id), "notify_url")

    def count_attempt(self, job_id: str) -> int:
        """One more attempt of the job's delivery; returns its number (1, 2, ...)."""
        return int(self.redis.hincrby(self.channel.attempts, job_id, 1))

    def reschedule(self, job_id: str, delay_s: float) -> None:
        self.redis.zadd(self.channel.due, {job_id: time.time() + delay_s})

    def settle(self, job_id: str, result: str, **fields: str) -> None:
        """Out of the outbox, with what became of it (and `fields`) in the record, unless the
        job was deleted meanwhile."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.channel.due, job_id)
        pipe.hdel(self.channel.attempts, job_id)
        pipe.execute()
        self.store.annotate(job_id, self.channel.field, result, **fields)
