"""What the API runs beside its routes for dashboards and people: async Redis clients (one for
event streams, one for short calls), the caps of `service.capacity`, the lab collector behind
`/metrics`, and the webhook deliverer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import redis.asyncio as aioredis
from fastapi import FastAPI

from service.capacity import StreamSlots
from service.metrics import LabCollector
from service.webhooks import Deliverer
from worker.settings import Settings

SHORT_CALL_TIMEOUT_S = 5.0  # a short call (a probe's ping, a stream's owner check) never hangs
SHORT_CALL_CONNECTIONS = 32  # more short calls at once wait for a connection, they do not fail


@asynccontextmanager
async def running(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Inside the app's lifespan, after `app.state.store` exists."""
    # Streams: XREAD BLOCK waits up to the keepalive interval, so no socket timeout shorter
    # than that (redis-py's default of 5 s broke streams of jobs quiet for longer). One
    # connection per open stream at most, and the slots cap open streams at the pool's size.
    app.state.stream_redis = aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=None,
        max_connections=settings.max_streams,
    )
    app.state.stream_slots = StreamSlots(settings.max_streams_per_key, settings.max_streams)
    app.state.aredis = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=SHORT_CALL_TIMEOUT_S,
            socket_connect_timeout=SHORT_CALL_TIMEOUT_S,
            max_connections=SHORT_CALL_CONNECTIONS,
            timeout=SHORT_CALL_TIMEOUT_S,
        )
    )
    app.state.renders = anyio.CapacityLimiter(settings.max_result_renders)
    collector = LabCollector(app.state.store.redis)
    app.state.registry.register(collector)
    deliverer = None
    if settings.webhook_secret:  # no secret: no webhook can have been accepted
        deliverer = asyncio.create_task(Deliverer(app.state.store, settings).run_forever())
    try:
        yield
    finally:
        if deliverer is not None:
            deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deliverer
        app.state.registry.unregister(collector)
        await app.state.aredis.aclose(close_connection_pool=True)
        await app.state.stream_redis.aclose()
