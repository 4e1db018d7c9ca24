"""The task queue as both sides see it: queue and task names, the broker's key layout, the
messages that carry tasks.

The API queues a new job's first task itself, inside the job store's create script
(`JobStore.create`): one round trip stores the job and queues its task, or does neither. The
message is built here (`task_message`), byte for byte in the form Celery's own `send_task`
writes through kombu's Redis transport, so any Celery worker of our queues consumes it. Workers
send the rest of a job's tasks, and the reaper resends lost ones, through a Celery app on the
same queues (`celery_client`). Importing this module stays torch-free and cheap.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu import Exchange, Queue
from redis.connection import parse_url

from jobmodel.settings import Settings

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)

PLAN_JOB = "bolab.plan_job"
RUN_BATCH = "bolab.run_batch"

# kombu's Redis transport: delivered-but-unacked messages and their delivery times, and the
# per-priority lists a queue's messages may sit in (`{queue}\x06\x16{priority}`; priority 0,
# Celery's default, is the list named like the queue).
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)
# Celery's event exchange: kombu publishes its messages on the Redis channel
# `/{db}.celeryev/{routing key}` (its `fanout_prefix` and `fanout_patterns`, both on).
EVENTS_EXCHANGE = "celeryev"
SENT_PROPERTIES = {
    "delivery_mode": 1,
    "delivery_info": {"exchange": EVENTS_EXCHANGE, "routing_key": "task.sent"},
}


def plan_unit(round: int) -> str:
    """The unit (lease, attempts, reaper) of planning round `round` of a job: "plan" for the
    first (every job's), "plan:{round}" for an adaptive job's later ones."""
    return "plan" if round == 0 else f"plan:{round}"


def plan_args(job_id: str, unit: str) -> list[Any]:
    """The PLAN_JOB arguments that run planning unit `unit` (see `plan_unit`)."""
    _, _, round = unit.partition(":")
    return [job_id, int(round)] if round else [job_id]


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


@dataclass(frozen=True)
class TaskMessage:
    """One task as kombu's Redis transport holds it: `message` LPUSHed onto the list `queue`
    (consumers BRPOP it), and its "task-sent" `event` PUBLISHed on `event_channel`."""

    queue: str
    message: str
    event_channel: str
    event: str


def _envelope(body: Any, headers: dict[str, Any], properties: dict[str, Any]) -> str:
    """kombu's JSON envelope of a message: a base64 JSON body, its headers and properties."""
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    properties = {**properties, "priority": 0, "body_encoding": "base64",
                  "delivery_tag": str(uuid.uuid4())}  # fmt: skip
    return json.dumps({"body": encoded, "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": headers,
                       "properties": properties})  # fmt: skip


def task_message(task: str, args: list[Any], queue: str, db: int) -> TaskMessage:
    """`task(*args)` on `queue` in Celery's task protocol 2, as `Celery.send_task` writes it
    (no eta, expiry, retries, time limits, links or result) to Redis database `db`."""
    task_id, origin = str(uuid.uuid4()), anon_nodename()
    properties = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                  "delivery_info": {"exchange": "", "routing_key": queue}}  # fmt: skip
    body = [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    sent = _sent_event(task, task_id, args, queue, origin)
    return TaskMessage(
        queue=queue,
        message=_envelope(body, _task_headers(task, task_id, args, origin), properties),
        event_channel=f"/{db}.{EVENTS_EXCHANGE}/task.sent",
        event=_envelope(sent, {"hostname": origin}, SENT_PROPERTIES),
    )


def _task_headers(task: str, task_id: str, args: list[Any], origin: str) -> dict[str, Any]:
    return {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": repr(args), "kwargsrepr": "{}", "origin": origin, "ignore_result": None,
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }  # fmt: skip


def _sent_event(
    task: str, task_id: str, args: list[Any], queue: str, origin: str
) -> dict[str, Any]:
    """The "task-sent" event Celery's sender publishes (its logical clock left at 0)."""
    return {
        "hostname": origin, "utcoffset": utcoffset(), "pid": os.getpid(), "clock": 0,
        "uuid": task_id, "root_id": task_id, "parent_id": None, "name": task,
        "args": repr(args), "kwargs": "{}", "retries": 0, "eta": None, "expires": None,
        "queue": queue, "exchange": "", "routing_key": queue, "timestamp": time.time(),
        "type": "task-sent",
    }  # fmt: skip


class JobQueue:
    """The first task of each new job, for the job store to queue with the job itself."""

    def __init__(self, db: int = 0) -> None:
        self.db = db  # the Redis database the broker's lists are in

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        return cls(int(parse_url(settings.redis_url).get("db", 0)))

    def plan_job(self, job_id: str, queue: str) -> TaskMessage:
        """The task that plans job `job_id`'s batches, on `queue`."""
        return task_message(PLAN_JOB, [job_id], queue, self.db)
