"""A job and its first task are stored in one step, and that task's message is the one Celery's
own `send_task` writes (which Celery workers consume: every job the service tests submit through
the API runs from it). On Redis database 3 of the session's server: no worker listens there."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bolab.stack import RedisServer
from jobmodel.queue import PLAN_JOB, JobQueue, celery_client
from jobmodel.settings import Settings
from jobmodel.store import IdempotentReplay, JobStore, QuotaFull

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]

DB = 3
SENT = f"/{DB}.celeryev/task.sent"
# Fields that differ from one message to the next: task id, delivery tag, Celery's reply queue
# (one per client thread), and the event's time and logical clock.
UNIQUE = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "uuid", "timestamp",
          "clock"}  # fmt: skip


@pytest.fixture
def url(redis_server: RedisServer) -> Iterator[str]:
    db_url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    yield db_url
    redis.Redis.from_url(db_url).flushdb()


def decoded(raw: str | bytes) -> dict[str, Any]:
    """A kombu envelope with its body decoded and the fields unique to it blanked."""
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    if isinstance(message["body"], dict):
        message["body"] = blank(message["body"])
    message["headers"], message["properties"] = (
        blank(message["headers"]),
        blank(message["properties"]),
    )
    return message


def blank(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: ("*" if k in UNIQUE else v) for k, v in fields.items()}


def sent_by_celery(url: str, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The message and "sent" event Celery's `send_task` writes for the plan task."""
    client = redis.Redis.from_url(url)
    events = client.pubsub()
    events.subscribe(SENT)
    app = celery_client(Settings(redis_url=url))
    app.send_task(PLAN_JOB, args=[job_id], queue="cpu")
    app.close()
    return decoded(client.rpop("cpu")), decoded(next_event(events))


def next_event(events: Any) -> bytes:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = events.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if got:
            return got["data"]
    raise AssertionError(f"no event on {SENT}")


def test_create_queues_the_plan_task_as_celery_sends_it(url: str) -> None:
    store = JobStore.from_url(url)
    events = store.redis.pubsub()
    events.subscribe(SENT)
    job = store.create({"n": 20}, runs_total=1, cells_total=1, queue="cpu", job_queue=JobQueue(DB))
    ours = decoded(store.redis.rpop("cpu"))
    our_event = decoded(next_event(events))
    assert store.redis.llen("cpu") == 0  # exactly one message
    assert ours["body"][0] == [job.id] and ours["headers"]["task"] == PLAN_JOB
    assert (ours, our_event) == sent_by_celery(url, job.id)
    store.close()


def test_a_refused_submission_queues_nothing(url: str) -> None:
    store, job_queue = JobStore.from_url(url), JobQueue(DB)
    idem = ("k" * 64, "b" * 64, 60)
    common: dict[str, Any] = dict(runs_total=1, cells_total=1, queue="cpu", owner="ada")
    first = store.create({"n": 20}, **common, idempotency=idem, job_queue=job_queue)
    with pytest.raises(IdempotentReplay):
        store.create({"n": 20}, **common, idempotency=idem, job_queue=job_queue)
    with pytest.raises(QuotaFull):
        store.create({"n": 20}, **common, max_active=1, job_queue=job_queue)
    assert [json.loads(m)["headers"]["argsrepr"] for m in store.redis.lrange("cpu", 0, -1)] == [
        repr([first.id])
    ]
    store.close()


def test_create_without_a_queue_sends_nothing(url: str) -> None:
    store = JobStore.from_url(url)
    store.create({"n": 20}, runs_total=1, cells_total=1, queue="cpu")
    assert store.redis.llen("cpu") == 0
    store.close()
