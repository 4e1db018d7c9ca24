"""Dependencies the routes take through `Depends`: settings, the job store, the dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from worker.celery_app import enqueue_job
from worker.settings import Settings, get_settings
from worker.store import JobStore

Enqueue = Callable[[str, str], None]


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_enqueue() -> Enqueue:
    return enqueue_job


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]
