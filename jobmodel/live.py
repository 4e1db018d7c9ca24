"""The job model for an event loop: probes, event streams, stream ownership, and creating jobs.

Three connection pools: one for event streams (XREAD BLOCK waits up to the keepalive interval,
so no socket timeout shorter than that; one connection per open stream at most), one for short
calls (a probe's ping, a stream's owner check), bounded so that they never hang, and one for
creating jobs (the store's create script, retried across a Redis restart as the sync store's
calls are).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry

from jobmodel import keys
from jobmodel.settings import Settings
from jobmodel.store import RESTART_OPTIONS, RESTART_RETRIES, Creation, JobRecord, restart_backoff

SHORT_CALL_TIMEOUT_S = 5.0  # a short call never hangs longer than this
SHORT_CALL_CONNECTIONS = 32  # more short calls at once wait for a connection, they do not fail

# One batch of stream entries: [(key, [(entry id, {"event": kind, "data": json}), ...])]
Entries = list[tuple[str, list[tuple[str, dict[str, str]]]]]


class LiveView:
    """The async side of the job store, for the API's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.streams = aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=None,
            max_connections=settings.max_streams,
        )
        self.short = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                decode_responses=True,
                socket_timeout=SHORT_CALL_TIMEOUT_S,
                socket_connect_timeout=SHORT_CALL_TIMEOUT_S,
                max_connections=SHORT_CALL_CONNECTIONS,
                timeout=SHORT_CALL_TIMEOUT_S,
            )
        )
        self.writes = aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            retry=Retry(restart_backoff(), RESTART_RETRIES),
            **RESTART_OPTIONS,
        )
        self._create = self.writes.register_script(Creation.SCRIPT)

    async def aclose(self) -> None:
        await self.short.aclose(close_connection_pool=True)
        await self.streams.aclose()
        await self.writes.aclose()

    async def create(self, creation: Creation) -> JobRecord:
        """`JobStore.create` without blocking the loop: the same single script call."""
        return creation.outcome(await self._create(keys=creation.keys, args=creation.args))

    async def ping(self) -> bool:
        return bool(await self.short.ping())

    async def live_workers(self, ttl_s: float) -> int:
        """Workers whose last heartbeat is recent (as `JobStore.live_workers` counts them)."""
        return int(await self.short.zcount(keys.WORKERS, time.time() - ttl_s, "+inf"))

    async def owner(self, job_id: str) -> str | None:
        """The job's owner ("" for nobody in particular), None when there is no such job."""
        return await self.short.hget(keys.job(job_id), "owner")

    async def events_after(self, job_id: str, last: str, block_ms: int | None) -> Entries:
        """Up to 200 events after id `last`; waits up to `block_ms` for one (None: no wait)."""
        return await self.streams.xread({keys.events(job_id): last}, count=200, block=block_ms)

    async def record(self, job_id: str) -> dict[str, Any]:
        """The job's raw record fields ({} when it is gone), read on the stream's connection."""
        return await self.streams.hgetall(keys.job(job_id))
