"""The submit path in process: POST /v1/jobs creates its job through the API's async Redis client,
which rides out a Redis restart as the sync store does; a create call that runs twice (a retry
after its answer was lost) stores and queues its job once; the app's start-up heap stays out of
the garbage collector's full passes while it serves."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bolab.stack import RedisServer
from jobmodel import keys
from jobmodel.queue import JobQueue
from jobmodel.settings import Settings
from jobmodel.store import Creation, JobStore
from tests.helpers import TINY
from tests.inprocess import app_client

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]
QUIET_DB = 4  # tests/test_queue.py uses 3


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own: it is restarted."""
    server = RedisServer(tmp_path / "redis", log_path=tmp_path / "redis.log").start()
    yield server
    server.stop()


def queued_plans(url: str) -> list[str]:
    """The job ids of the plan tasks waiting on the cpu queue, oldest first."""
    with redis.Redis.from_url(url, decode_responses=True) as r:
        messages = r.lrange("cpu", 0, -1)
    return [json.loads(m)["headers"]["argsrepr"][2:-2] for m in reversed(messages)]


def test_a_submit_after_a_redis_restart_succeeds(own_redis: RedisServer) -> None:
    with app_client(Settings(redis_url=own_redis.url)) as app:
        before = app.post("/v1/jobs", json=TINY)  # pools a connection, loads the script
        assert before.status_code == 202, before.text
        own_redis.stop()  # SIGTERM: Redis writes its AOF and exits; pooled sockets die
        own_redis.start()
        after = app.post("/v1/jobs", json={**TINY, "seed": 1})
        assert after.status_code == 202, after.text
        for answer in (before, after):
            assert app.get(f"/v1/jobs/{answer.json()['id']}").json()["status"] == "queued"
    assert queued_plans(own_redis.url) == [before.json()["id"], after.json()["id"]]


@pytest.fixture
def quiet_store(redis_server: RedisServer) -> Iterator[JobStore]:
    """A store on a database of the session's Redis that no worker consumes from."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{QUIET_DB}"
    store = JobStore.from_url(url)
    yield store
    store.redis.flushdb()
    store.close()


def test_a_create_call_run_twice_stores_and_queues_its_job_once(quiet_store: JobStore) -> None:
    """The client retries a call whose answer a dropped connection lost: the script may have
    run already, and must not queue the task again."""
    store = quiet_store
    creation = Creation.prepare(
        {"n": 20}, runs_total=1, cells_total=1, queue="gpu", owner="ada",
        job_queue=JobQueue(QUIET_DB),
    )  # fmt: skip
    script = store.redis.register_script(Creation.SCRIPT)
    submitted = keys.METRIC_COUNTERS, creation.args[5]
    before = int(store.redis.hget(*submitted) or 0)
    first = script(keys=creation.keys, args=creation.args)
    again = script(keys=creation.keys, args=creation.args)
    assert first == again == ["created", creation.job.id]
    messages = store.redis.lrange("gpu", 0, -1)
    assert [json.loads(m)["headers"]["argsrepr"] for m in messages] == [repr([creation.job.id])]
    assert int(store.redis.hget(*submitted)) == before + 1
    assert store.redis.xlen(keys.events(creation.job.id)) == 1
    assert store.redis.zscore(keys.owner_jobs("ada", "queued"), creation.job.id) == 0


def test_the_start_up_heap_is_frozen_while_the_app_serves(redis_server: RedisServer) -> None:
    with app_client(Settings(redis_url=redis_server.url)) as app:
        assert app.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000
