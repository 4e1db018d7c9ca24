"""Worker liveness in the job store: `/readyz` and the metrics issue count live workers by it.

Celery's own broadcast ping needs a reply timeout per call; a heartbeat key is one Redis read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from worker.settings import get_settings
from worker.store import JobStore

log = logging.getLogger(__name__)
_stop = threading.Event()


def _beat(store: JobStore, name: str, queues: list[str]) -> None:
    settings = get_settings()
    while not _stop.is_set():
        try:
            store.heartbeat(name, queues, settings.worker_ttl_s)
        except Exception:  # Redis away for a moment: keep beating once it is back
            log.warning("heartbeat to Redis failed", exc_info=True)
        _stop.wait(settings.worker_heartbeat_s)


@worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    store = JobStore.from_url(get_settings().redis_url)
    queues = sorted(sender.app.amqp.queues.consume_from)
    threading.Thread(
        target=_beat, args=(store, sender.hostname, queues), name="bolab-heartbeat", daemon=True
    ).start()


@worker_shutdown.connect
def _end(sender: Any, **_: Any) -> None:
    _stop.set()
    try:
        JobStore.from_url(get_settings().redis_url).worker_gone(sender.hostname)
    except Exception:
        log.warning("could not remove worker heartbeat", exc_info=True)
