"""What the API runs beside its routes for dashboards and people: the async reads of
`jobmodel.live` (event streams, probes), the caps of `service.capacity`, the lab collector
behind `/metrics`, the webhook deliverer and the MLflow exporter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from jobmodel.live import LiveView
from jobmodel.settings import Settings
from service.auto_export import Exporter
from service.capacity import StreamSlots
from service.outbox_drain import Drain
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
    drains: list[Drain] = []
    if settings.webhook_secret:  # no secret: no webhook can have been accepted
        drains.append(Deliverer(app.state.store, settings))
    if settings.mlflow_tracking_uri:
        drains.append(Exporter(app.state.store, settings))
    tasks = [asyncio.create_task(drain.run_forever()) for drain in drains]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app.state.registry.unregister(collector)
        await app.state.live.aclose()
