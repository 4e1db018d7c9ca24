"""Liveness and readiness probes (docker-compose healthchecks, load balancers, `bolab up`).

Both run on the event loop (no worker thread, no blocking call): they answer at once even
while every thread is busy building results for other clients.
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Process is up",
    description="Answers 200 as long as the API process serves requests; touches nothing else.",
)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Ready to run jobs",
    description="200 when Redis answers a ping and at least one worker sent a heartbeat "
    "recently; 503 (same body) otherwise.",
    responses={503: {"model": Health, "description": "Redis unreachable or no live worker"}},
)
async def readyz(request: Request) -> JSONResponse:
    # From app.state, not a dependency: a sync dependency would wait for a worker thread.
    live, settings = request.app.state.live, request.app.state.settings
    try:
        up = await live.ping()
        workers = await live.live_workers(settings.worker_ttl_s)
    except redis.RedisError:
        up, workers = False, 0
    ready = up and workers > 0
    body = Health(status="ready" if ready else "not ready", redis=up, workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
