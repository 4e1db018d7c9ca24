"""Dependencies the routes take through `Depends`: the job store, and the app's parts the submit
route uses (settings, job store and its event-loop side, queue, the cost estimate's model).

Coroutines, though they never wait: FastAPI runs a plain function dependency in its thread
pool, a hop per dependency per request that costs more than the lookup itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import State

from jobmodel.live import LiveView
from jobmodel.queue import JobQueue
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from service.estimates import Estimator


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


@dataclass(frozen=True)
class Parts:
    """The app's parts POST /v1/jobs uses, in one dependency: FastAPI spends a step of its own
    on each dependency of each request, more than the lookup itself costs."""

    settings: Settings
    store: JobStore
    live: LiveView
    queue: JobQueue
    estimator: Estimator

    @classmethod
    def of(cls, state: State) -> Parts:
        """From the app's state, once its lifespan has made the store, queue and live view."""
        return cls(state.settings, state.store, state.live, state.queue, state.estimator)


async def get_parts(request: Request) -> Parts:
    return request.app.state.parts


StoreDep = Annotated[JobStore, Depends(get_store)]
PartsDep = Annotated[Parts, Depends(get_parts)]
