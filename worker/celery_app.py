"""The Celery app: Redis broker, the settings that keep jobs from being lost, two queues.

Importing this module must stay cheap and torch-free: the API imports it to enqueue. Task code
(which imports the engine) lives in `worker.tasks` and is loaded only by worker processes.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from worker.settings import get_settings

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)

PLAN_JOB = "bolab.plan_job"
RUN_BATCH = "bolab.run_batch"


def queue_for(device: str) -> str:
    """Jobs that ask for CUDA go to GPU workers; "auto" and "cpu" run anywhere a CPU is."""
    return GPU_QUEUE if device == "cuda" else CPU_QUEUE


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("bolab", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in the job store, not the result backend
        # A batch is acknowledged only after it ran; a worker lost mid-batch gives it back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Backstops for a batch stuck outside the training loop (prefork pools only); the
        # batch's lease (worker.reaper) normally stops it first, through the cancel callback.
        task_soft_time_limit=settings.batch_time_limit_s + 2 * settings.lease_ttl_s + 30,
        task_time_limit=settings.batch_time_limit_s + 2 * settings.lease_ttl_s + 90,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # Each queue its own exchange and key: a bare Queue(name) would inherit the default
        # queue's routing key, and gpu batches would land on cpu workers.
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=CPU_QUEUE,
        # Task events (received, started, succeeded, ...) and the "sent" event of each task:
        # what Flower shows, unmodified (`celery flower` against the same Redis).
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


celery_app = make_celery()


def enqueue_job(job_id: str, queue: str) -> None:
    """Hand a new job to the workers: the first task plans its batches (see `worker.tasks`)."""
    celery_app.send_task(PLAN_JOB, args=[job_id], queue=queue)
