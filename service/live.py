"""What the API runs beside its routes for dashboards and people: the async reads of
`jobmodel.live` (event streams, probes), the caps of `service.capacity`, the lab collector
behind `/metrics`, and the webhook deliverer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from jobmodel.live import LiveView
from jobmodel.settings import Settings
from service.capacity import StreamSlots
from service.prometheus import LabCollector
from service.webhooks import Deliverer


@asynccontextmanager
async def running(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Inside the app's lifespan, after `app.state.store` exists."""
    # The slots cap open streams at the size of the streams' connection pool.
    app.state.live = LiveView(settings)
    app.state.stream_slots = StreamSlots(settings.max_streams_per_key, settings.max_streams)
    app.state.renders = anyio.CapacityLimiter(settings.max_result_renders)
    collector = LabCollector(app.state.store, settings)
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
        await app.state.live.aclose()
