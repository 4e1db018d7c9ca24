"""Leases on the units of a job ("plan", or a batch index), delivery counts, the reaper's lock.

A worker holds a unit's lease while it runs the unit; the lease expires when the worker dies
(see `worker.lease` for the refresher and `worker.reaper` for what is done about lost units).
"""

from __future__ import annotations

import redis

from jobmodel import keys

# Refresh only our own lease (another attempt may hold the key after ours expired).
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Take a unit's lease (KEYS[2]) and count the delivery (KEYS[3]) only while the job's record
# (KEYS[1]) exists: a task of a deleted job leaves nothing behind. ARGV: token, TTL ms, unit.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
OVERDUE = ":overdue"  # suffix of the attempts field that says a unit ran over its time limit


class Leases:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._refresh = client.register_script(_REFRESH)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def acquire(self, job_id: str, unit: str, token: str, ttl_ms: int) -> bool:
        """Take the unit's lease and count a delivery; False when another attempt holds it or
        the job is gone."""
        lease, job, attempts = keys.lease(job_id, unit), keys.job(job_id), keys.attempts(job_id)
        return bool(self._acquire(keys=[job, lease, attempts], args=[token, ttl_ms, unit]))

    def refresh(self, job_id: str, unit: str, token: str, ttl_ms: int) -> bool:
        return self._refresh(keys=[keys.lease(job_id, unit)], args=[token, ttl_ms]) == 1

    def release(self, job_id: str, unit: str, token: str) -> None:
        self._release(keys=[keys.lease(job_id, unit)], args=[token])

    def mark_overdue(self, job_id: str, unit: str) -> None:
        self.redis.hset(keys.attempts(job_id), f"{unit}{OVERDUE}", 1)

    def key(self, job_id: str, unit: str) -> str:
        """The lease's Redis key: what names a holder (the run cache's claims hold it)."""
        return keys.lease(job_id, unit)

    def held(self, job_id: str, unit: str) -> bool:
        return bool(self.redis.exists(keys.lease(job_id, unit)))

    def attempts(self, job_id: str, unit: str) -> tuple[int, bool]:
        """Deliveries of the unit started so far, and whether it ran over its time limit."""
        started, overdue = self.redis.hmget(keys.attempts(job_id), unit, f"{unit}{OVERDUE}")
        return int(started or 0), overdue is not None

    def hold_reaper_lock(self, token: str, ttl_ms: int) -> bool:
        """Take the reaper's lock, or keep it when `token` holds it already."""
        taken = self.redis.set(keys.REAPER_LOCK, token, nx=True, px=ttl_ms)
        return bool(taken) or self._refresh(keys=[keys.REAPER_LOCK], args=[token, ttl_ms]) == 1
