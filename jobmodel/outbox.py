"""The webhook outbox: which finished jobs still owe their webhook, and when it is next due.

A job's `notify_url` is kept in its record; `jobmodel.events.job_ended` puts the job in the
outbox. API processes claim due entries (one claim per entry at a time, under a lease that
expires if the claimer dies), count attempts, reschedule, and settle each with its outcome.
"""

from __future__ import annotations

import time

import redis

from jobmodel import keys
from jobmodel.store import JobStore

# Claim up to ARGV[3] due ids: push each one's score to ARGV[2] (the claim's lease), return them.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


class Outbox:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.redis: redis.Redis = store.redis
        self._claim = self.redis.register_script(_CLAIM)

    def claim(self, limit: int, lease_s: float) -> list[str]:
        """Up to `limit` due job ids, each held back from other claims for `lease_s`."""
        now = time.time()
        return list(self._claim(keys=[keys.WEBHOOKS_DUE], args=[now, now + lease_s, limit]))

    def url(self, job_id: str) -> str | None:
        return self.redis.hget(keys.job(job_id), "notify_url")

    def count_attempt(self, job_id: str) -> int:
        """One more delivery attempt of the job's webhook; returns its number (1, 2, ...)."""
        return int(self.redis.hincrby(keys.WEBHOOK_ATTEMPTS, job_id, 1))

    def reschedule(self, job_id: str, delay_s: float) -> None:
        self.redis.zadd(keys.WEBHOOKS_DUE, {job_id: time.time() + delay_s})

    def settle(self, job_id: str, result: str) -> None:
        """Out of the outbox, with what became of it in the record (unless deleted meanwhile)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(keys.WEBHOOKS_DUE, job_id)
        pipe.hdel(keys.WEBHOOK_ATTEMPTS, job_id)
        pipe.execute()
        self.store.annotate(job_id, "webhook", result)
