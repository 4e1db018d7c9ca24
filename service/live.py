"""What the API runs beside its routes for dashboards and people: an async Redis client for
event streams, the lab collector behind `/metrics`, and the webhook deliverer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from service.metrics import LabCollector
from service.webhooks import Deliverer
from worker.settings import Settings


@asynccontextmanager
async def running(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Inside the app's lifespan, after `app.state.store` exists."""
    # XREAD BLOCK waits up to the keepalive interval: no socket timeout shorter than that
    # (redis-py's default of 5 s broke streams of jobs quiet for longer).
    app.state.aredis = aioredis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=None
    )
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
        await app.state.aredis.aclose()
