"""Worker liveness in the job store: `/readyz` and the `/metrics` worker gauges count by it.

Celery's own broadcast ping needs a reply timeout per call; a heartbeat key is one Redis read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from jobmodel.settings import Settings
from jobmodel.store import JobStore

log = logging.getLogger(__name__)
_stop = threading.Event()


def _beat(store: JobStore, settings: Settings, name: str, queues: list[str]) -> None:
    while not _stop.is_set():
        try:
            store.heartbeat(name, queues, settings.worker_ttl_s)
        except Exception:  # Redis away for a moment: keep beating once it is back
            log.warning("heartbeat to Redis failed", exc_info=True)
        _stop.wait(settings.worker_heartbeat_s)


@worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    from worker.celery_app import settings

    config = settings()
    store = JobStore.from_url(config.redis_url)
    queues = sorted(sender.app.amqp.queues.consume_from)
    args = (store, config, sender.hostname, queues)
    threading.Thread(target=_beat, args=args, name="bolab-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _end(sender: Any, **_: Any) -> None:
    _stop.set()
    try:
        from worker.celery_app import settings

        JobStore.from_url(settings().redis_url).worker_gone(sender.hostname)
    except Exception:
        log.warning("could not remove worker heartbeat", exc_info=True)
