"""Liveness and readiness probes (docker-compose healthchecks, load balancers, `bolab up`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import SettingsDep, StoreDep
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Process is up",
    description="Answers 200 as long as the API process serves requests; touches nothing else.",
)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Ready to run jobs",
    description="200 when Redis answers a ping and at least one worker sent a heartbeat "
    "recently; 503 (same body) otherwise.",
    responses={503: {"model": Health, "description": "Redis unreachable or no live worker"}},
)
def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
    up = store.ping()
    workers = len(store.live_workers(settings.worker_ttl_s)) if up else 0
    ready = up and workers > 0
    body = Health(status="ready" if ready else "not ready", redis=up, workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
