"""The task queue as both sides see it: queue and task names, the broker's key layout, sending.

The API sends a new job's first task; workers send the rest and the reaper resends lost ones.
All of them declare the queues here, so a message sent by one process lands where the workers
of its kind listen. Importing this module stays torch-free and cheap.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from jobmodel.settings import Settings

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)

# Producers (each with its broker connection) a sending process keeps: as many as the threads
# that run the API's sync routes (anyio's default), so no submission waits for another's.
SENDERS = 40

PLAN_JOB = "bolab.plan_job"
RUN_BATCH = "bolab.run_batch"

# kombu's Redis transport: delivered-but-unacked messages and their delivery times, and the
# per-priority lists a queue's messages may sit in (`{queue}\x06\x16{priority}`).
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


def queue_for(device: str) -> str:
    """Jobs that ask for CUDA go to GPU workers; "auto" and "cpu" run anywhere a CPU is."""
    return GPU_QUEUE if device == "cuda" else CPU_QUEUE


def broker_lists() -> list[str]:
    """Every Redis list a waiting message of one of our queues may be in."""
    return [f"{q}{PRIORITY_SEP}{p}" for q in QUEUES for p in PRIORITY_STEPS] + list(QUEUES)


def celery_client(settings: Settings) -> Celery:
    """A Celery app that sends to our queues: the base the worker's app extends."""
    app = Celery("bolab", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in the job store, not the result backend
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # Each queue its own exchange and key: a bare Queue(name) would inherit the default
        # queue's routing key, and gpu batches would land on cpu workers.
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=CPU_QUEUE,
        # The "sent" event of each task: what Flower shows (`celery flower` on the same Redis).
        task_send_sent_event=True,
    )
    return app


class JobQueue:
    """Sends tasks of jobs to the workers."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        app = celery_client(settings)
        app.conf.broker_pool_limit = SENDERS
        return cls(app)

    def close(self) -> None:
        self.app.close()  # its broker connections and producer pool

    def send_job(self, job_id: str, queue: str) -> None:
        """Hand a new job to the workers: the first task plans its batches."""
        self.app.send_task(PLAN_JOB, args=[job_id], queue=queue)

    def send_batch(self, job_id: str, batch: int, queue: str) -> None:
        self.app.send_task(RUN_BATCH, args=[job_id, batch], queue=queue)
