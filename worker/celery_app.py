"""The workers' Celery app: the queues of `jobmodel.queue`, plus what keeps jobs from being lost.

Task code (which imports the engine) lives in `worker.tasks`, which this app includes. The
worker's settings are read once, when this module is imported (a worker process's entry), or
given by `configure` before the worker starts (`bolab worker --redis-url`); the tasks, the
heartbeat and the reaper take them from `settings()`, and the JSON event logs their level.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from jobmodel import logs
from jobmodel.queue import celery_client
from jobmodel.settings import Settings


def _worker_conf(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        # A batch is acknowledged only after it ran; a worker lost mid-batch gives it back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Backstops for a batch stuck outside the training loop (prefork pools only); the
        # batch's lease (worker.lease) normally stops it first, through the cancel callback.
        "task_soft_time_limit": settings.batch_time_limit_s + 2 * settings.lease_ttl_s + 30,
        "task_time_limit": settings.batch_time_limit_s + 2 * settings.lease_ttl_s + 90,
        # Task events (received, started, succeeded, ...): what Flower shows, unmodified.
        "worker_send_task_events": True,
    }


def make_celery(settings: Settings) -> Celery:
    app = celery_client(settings)
    app.conf.update(include=["worker.tasks"], **_worker_conf(settings))
    return app


_settings = Settings()
celery_app = make_celery(_settings)


def configure(settings: Settings) -> None:
    """Run this process's worker with `settings` (call before the worker starts)."""
    global _settings
    _settings = settings
    celery_app.conf.update(_worker_conf(settings))


def settings() -> Settings:
    """The settings this worker process runs with."""
    return _settings


@worker_init.connect
def _event_logs(**_: Any) -> None:
    """The level of the JSON event lines, set before the pool starts: its processes inherit it."""
    logs.configure(_settings.log_level)
