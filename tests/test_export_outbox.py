"""The MLflow export's bookkeeping, in process on the real Redis: a job that succeeds is queued
for export only where the deployment exports, the job view shows the export's state and run id,
and deleting a job leaves nothing in any outbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bolab.stack import RedisServer
from jobmodel import keys
from jobmodel.outbox import MLFLOW, WEBHOOK, Outbox
from jobmodel.store import Deletion, JobStore
from tests.helpers import TINY
from tests.inprocess import AppClient

pytestmark = pytest.mark.fast


@pytest.fixture
def exporting(redis_server: RedisServer) -> Iterator[JobStore]:
    """The store of a process that ends jobs in a deployment with MLflow export on."""
    store = JobStore.from_url(redis_server.url, export_to_mlflow=True)
    yield store
    store.close()


def ended(store: JobStore, succeeded: bool = True) -> str:
    job = store.create(dict(TINY), runs_total=2, cells_total=1, queue="cpu")
    if succeeded:
        store.mark_succeeded(job.id, {"device": "cpu"})
    else:
        store.cancel(job.id)
    return job.id


def export_view(app: AppClient, job_id: str) -> dict | None:
    answer = app.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200
    return answer.json()["mlflow"]


def test_succeeded_jobs_are_queued_and_shown_pending(app: AppClient, exporting: JobStore) -> None:
    job_id = ended(exporting)
    assert exporting.redis.zscore(keys.MLFLOW_DUE, job_id) is not None
    assert export_view(app, job_id) == {"status": "pending", "run_id": None, "detail": None}

    outbox = Outbox(exporting, MLFLOW)
    outbox.settle(job_id, "exported", mlflow_run_id="0123abcd")
    assert exporting.redis.zscore(keys.MLFLOW_DUE, job_id) is None
    assert export_view(app, job_id) == {"status": "exported", "run_id": "0123abcd", "detail": None}


def test_failed_export_shows_why(app: AppClient, exporting: JobStore) -> None:
    job_id = ended(exporting)
    Outbox(exporting, MLFLOW).settle(job_id, "failed after 5: ConnectionError: refused")
    view = export_view(app, job_id)
    assert view == {
        "status": "failed",
        "run_id": None,
        "detail": "failed after 5: ConnectionError: refused",
    }


def test_nothing_queued_without_export_or_success(
    app: AppClient, store: JobStore, exporting: JobStore
) -> None:
    plain = ended(store)  # a deployment without MLflow export
    cancelled = ended(exporting, succeeded=False)
    for job_id in (plain, cancelled):
        assert store.redis.zscore(keys.MLFLOW_DUE, job_id) is None
        assert export_view(app, job_id) is None


def test_delete_empties_every_outbox(exporting: JobStore) -> None:
    job_id = ended(exporting)
    for channel in (WEBHOOK, MLFLOW):
        exporting.redis.zadd(channel.due, {job_id: 1.0})
        Outbox(exporting, channel).count_attempt(job_id)
    assert exporting.delete(job_id) == Deletion.deleted
    for channel in (WEBHOOK, MLFLOW):
        assert exporting.redis.zscore(channel.due, job_id) is None
        assert not exporting.redis.hexists(channel.attempts, job_id)
    # A late export settles nothing back into the deleted job.
    Outbox(exporting, MLFLOW).settle(job_id, "exported", mlflow_run_id="x")
    assert not exporting.redis.exists(keys.job(job_id))
