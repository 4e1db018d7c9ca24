"""The FastAPI app of the lab service. `uvicorn service.main:app` or `bolab api` serves it.

This process validates, stores and queues; it never runs torch (the engine runs in workers).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI

import bo_engine
from jobmodel import logs
from jobmodel.queue import JobQueue
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from service import errors, live, prometheus
from service.auth import AUTH_RESPONSES
from service.browser import LoopbackHostOnly, SecurityHeaders
from service.deps import Parts
from service.estimates import Estimator
from service.limits import BodyLimit
from service.routes import docs, events, health, jobs, ui

DESCRIPTION = """\
Submit benign-overfitting experiments (a `JobSpec`: one setting or a grid sweep), follow their
progress, and fetch results as JSON, CSV or a figure. Workers train two-layer leaky ReLU
networks with gradient descent on the hinge loss; results are kept in Redis.
"""

TAGS = [
    {"name": "jobs", "description": "Submit, follow, fetch and cancel experiment jobs."},
    {"name": "health", "description": "Probes for orchestration, and Prometheus metrics."},
    {"name": "ui", "description": "What the web page at /ui reads besides the job routes."},
]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """What imports and start-up made (some 140 000 objects) lives as long as the app: frozen,
    the garbage collector's full passes skip it. Else each pass scans it all, a stall of about
    80 ms for every request in flight (a submit's p99, under load)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(settings: Settings) -> FastAPI:
    """The app, configured by `settings` alone: routes and middleware take them from here."""
    logs.configure(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = JobStore.from_url(
            settings.redis_url, export_to_mlflow=bool(settings.mlflow_tracking_uri)
        )
        app.state.queue = JobQueue.from_settings(settings)
        async with live.running(app, settings):  # event streams, /metrics, webhooks
            app.state.parts = Parts.of(app.state)
            with frozen_heap():
                yield
        app.state.store.close()

    app = FastAPI(
        title="bolab lab service",
        version=bo_engine.__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # service.routes.docs serves Swagger UI from the installed package
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.estimator = Estimator(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(LoopbackHostOnly, settings=settings)
    app.add_middleware(SecurityHeaders)  # on every answer, the 400 of a refused Host included
    prometheus.install(app)  # outermost: counts every answer, 413s included
    app.include_router(jobs.submit_router(settings))
    app.include_router(jobs.router)
    app.include_router(events.router, responses=AUTH_RESPONSES)
    app.include_router(health.router)
    ui.install(app)
    docs.install(app)
    return app


app = create_app(Settings())  # `uvicorn service.main:app`: settings from BOLAB_* variables
