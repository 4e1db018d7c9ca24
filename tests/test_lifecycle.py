"""A job's end of life, against the real Redis, worker and a keyed uvicorn API.

`DELETE /v1/jobs/{id}` removes a finished job and every trace of it in Redis (record, results,
progress, events, indexes, webhook outbox, its idempotency key) and nothing of any other job; it
refuses an active job (409) and answers another owner's job like a missing one (404). Retention
deletes terminal jobs that finished long enough ago and keeps the rest. A task of a deleted job
writes nothing back. Redis's memory in use is a Prometheus gauge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bolab.client import LabClient, LabError
from bolab.stack import ApiServer, RedisServer
from jobmodel import keys
from jobmodel.settings import Settings
from jobmodel.store import Deletion, JobStatus, JobStore
from tests.helpers import ENDLESS, TINY, eventually
from tests.test_metrics_service import scrape, value
from worker.lease import Lease
from worker.reaper import Reaper

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def own_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobStore]:
    """A Redis of its own: retention deletes whatever ended long enough ago, other suites'
    jobs included, so it must not run on the shared one."""
    server = RedisServer(tmp_path_factory.mktemp("lifecycle") / "redis")
    server.start()
    jobs = JobStore.from_url(server.url)
    yield jobs
    jobs.redis.close()
    server.stop()


def as_(server: ApiServer, key: str) -> LabClient:
    return LabClient(server.url, api_key=key, timeout=30)


def traces(client: redis.Redis, job_id: str) -> list[str]:
    """Every place in Redis that names the job: a key, a set or hash member, a string value."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if job_id in key:
            found.append(key)
        elif kind == "zset" and client.zscore(key, job_id) is not None:
            found.append(f"{key} (member)")
        elif kind == "hash" and client.hexists(key, job_id):
            found.append(f"{key} (field)")
        elif kind == "string" and job_id in (client.get(key) or ""):
            found.append(f"{key} (value)")
    return found


def snapshot(client: redis.Redis, job_id: str) -> dict[str, Any]:
    """The job's own keys, byte for byte, and its index memberships."""
    dumps = {key: client.dump(key) for key in client.scan_iter(f"{keys.job(job_id)}*")}
    indexes = [k for k in client.scan_iter(f"{keys.JOBS}*") if client.zscore(k, job_id)]
    return {"keys": dumps, "indexes": sorted(indexes)}


def test_delete_removes_every_trace_of_the_job_and_nothing_else(
    secured_api: ApiServer, api_keys: dict[str, str], store: JobStore
) -> None:
    with as_(secured_api, api_keys["alice"]) as alice:
        doomed = alice.submit(TINY, idempotency_key="retry-me")["id"]
        kept = alice.submit(TINY)["id"]
        for job_id in (doomed, kept):
            assert alice.wait(job_id, timeout=60)["status"] == "succeeded"
        # A webhook still pending for both (as if their receivers were down).
        store.redis.zadd(keys.WEBHOOKS_DUE, {doomed: time.time() + 3600, kept: time.time() + 1})
        store.redis.hset(keys.WEBHOOK_ATTEMPTS, mapping={doomed: 2, kept: 1})
        assert len(traces(store.redis, doomed)) >= 8  # the test looks where the job is
        before = snapshot(store.redis, kept)

        alice.delete(doomed)

        assert traces(store.redis, doomed) == []
        assert snapshot(store.redis, kept) == before
        assert store.redis.zscore(keys.WEBHOOKS_DUE, kept) is not None
        assert store.redis.hget(keys.WEBHOOK_ATTEMPTS, kept) == "1"
        for call in (alice.status, alice.results, alice.delete):
            with pytest.raises(LabError) as gone:
                call(doomed)
            assert gone.value.status_code == 404
        # The key that made it is free again: no answer points at a job that is gone.
        again = alice.submit(TINY, idempotency_key="retry-me")["id"]
        assert again != doomed and alice.status(again)["id"] == again
        assert kept in {job["id"] for job in alice.list(limit=200)["items"]}


def test_delete_refuses_active_jobs_and_other_owners(
    secured_api: ApiServer, api_keys: dict[str, str], store: JobStore
) -> None:
    with (
        as_(secured_api, api_keys["alice"]) as alice,
        as_(secured_api, api_keys["bob"]) as bob,
        as_(secured_api, api_keys["root"]) as admin,
    ):
        job_id = alice.submit(ENDLESS)["id"]
        with pytest.raises(LabError) as active:
            alice.delete(job_id)
        assert active.value.status_code == 409 and "cancel it first" in active.value.detail
        alice.cancel(job_id)
        with pytest.raises(LabError) as other:
            bob.delete(job_id)
        assert other.value.status_code == 404 and "no job" in other.value.detail
        assert alice.status(job_id)["status"] == "cancelled"  # both refusals changed nothing

        def deleted_by_admin() -> bool:
            # 409 while the worker is still stopping the batch it had started.
            response = admin.http.delete(f"/v1/jobs/{job_id}")
            assert response.status_code in (204, 409), response.text
            if response.status_code == 409:
                assert response.headers["retry-after"] == "1"
            return response.status_code == 204

        eventually(deleted_by_admin, timeout=30)
        assert traces(store.redis, job_id) == []


def _ended(store: JobStore, status: JobStatus = JobStatus.failed) -> str:
    job = store.create({"n": 20, "d": 40}, runs_total=2, cells_total=1, queue="cpu")
    assert store.transition(job.id, status, (JobStatus.queued,), finished_at=repr(time.time()))
    return job.id


def test_a_worker_still_on_the_job_makes_delete_wait(own_store: JobStore) -> None:
    store = own_store
    job_id = _ended(store, JobStatus.cancelled)
    store.set_batches_total(job_id, 3)
    store.redis.set(keys.lease(job_id, "2"), "token", px=10_000)  # batch 2 is still stopping
    assert store.delete(job_id) == Deletion.busy
    assert store.get(job_id) is not None
    store.redis.delete(keys.lease(job_id, "2"))
    assert store.delete(job_id) == Deletion.deleted
    assert store.delete(job_id) == Deletion.missing


def test_late_writers_of_a_deleted_job_leave_nothing(own_store: JobStore) -> None:
    store = own_store
    job_id = _ended(store)
    assert store.delete(job_id) == Deletion.deleted
    # A batch message still queued for it, and a webhook delivery that was in flight.
    assert not Lease(store, job_id, "0", Settings()).acquire()
    assert not store.annotate(job_id, "webhook", "delivered")
    assert traces(store.redis, job_id) == []


def test_retention_deletes_only_terminal_jobs_that_ended_long_enough_ago(
    own_store: JobStore,
) -> None:
    store = own_store
    second = 1 / 86400  # retention_days of one second
    old = _ended(store)
    started_early = store.create({"n": 20}, runs_total=1, cells_total=1, queue="cpu").id
    active = store.create({"n": 20}, runs_total=1, cells_total=1, queue="cpu").id
    time.sleep(1.5)
    store.mark_failed(started_early, "ended just now")  # created long ago, ended just now
    recent = _ended(store, JobStatus.succeeded)

    assert Reaper(store, Settings(retention_days=0)).prune() == []  # the default: keep all
    assert store.get(old) is not None

    done = Reaper(store, Settings(retention_days=second)).prune()
    assert any(old in action for action in done)
    assert traces(store.redis, old) == []
    for job_id in (started_early, active, recent):
        assert store.get(job_id) is not None, job_id
        assert not any(job_id in action for action in done)


def test_delete_frees_a_full_store(tmp_path: Path) -> None:
    """A Redis at its maxmemory refuses writes, yet deletes still run: an admin can make room."""
    server = RedisServer(tmp_path / "redis", maxmemory="16mb")
    server.start()
    try:
        store = JobStore.from_url(server.url)
        job_id = _ended(store)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for index in range(1000):  # 100 MB of results, far over the cap
                store.redis.hset(keys.cells(job_id), str(index), "x" * 100_000)
        assert store.delete(job_id) == Deletion.deleted
        eventually(lambda: store.redis.info("memory")["used_memory"] < 8 * 2**20, timeout=10)
        assert store.get(_ended(store)) is not None  # writes go through again
        store.redis.close()
    finally:
        server.stop()


def test_redis_memory_is_a_gauge(secured_api: ApiServer, store: JobStore) -> None:
    samples = scrape(secured_api.url)
    used = value(samples, "bolab_redis_memory_bytes")
    assert used > 100_000  # a live Redis holds at least its own structures
    assert abs(used - store.redis.info("memory")["used_memory"]) < 50 * 2**20
    assert ("bolab_redis_maxmemory_bytes", frozenset()) in samples


def test_delete_is_in_the_document(secured_api: ApiServer) -> None:
    operation = httpx.get(f"{secured_api.url}/openapi.json").json()["paths"]["/v1/jobs/{job_id}"]
    assert {"204", "404", "409"} <= set(operation["delete"]["responses"])
