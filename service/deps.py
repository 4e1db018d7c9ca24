"""Dependencies the routes take through `Depends`: the app's settings, job store (and its
event-loop side), queue, and the cost estimate's model.

Coroutines, though they never wait: FastAPI runs a plain function dependency in its thread
pool, a hop per dependency per request that costs more than the lookup itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jobmodel.live import LiveView
from jobmodel.queue import JobQueue
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from service.estimates import Estimator


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


async def get_live(request: Request) -> LiveView:
    return request.app.state.live


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def get_estimator(request: Request) -> Estimator:
    return request.app.state.estimator


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
LiveDep = Annotated[LiveView, Depends(get_live)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
EstimatorDep = Annotated[Estimator, Depends(get_estimator)]
