"""Automatic MLflow export: with `BOLAB_MLFLOW_TRACKING_URI` set, every job that succeeds is
logged to that server (`service.mlflow_export`) from the API processes.

The process that marks a job succeeded puts it in the `bolab:mlflow:due` outbox and its record's
`mlflow_export` reads "pending". Every API process drains that outbox (`Exporter`, a
`service.outbox_drain.Drain`, the machinery of webhooks): one claim per job at a time, renewed
while the export runs, so an API process killed mid-export leaves a claim that comes due again
within `BOLAB_MLFLOW_LEASE_S`, and the next export finds the runs already made by their tags and
completes them (none is made twice). A failed attempt is retried like a webhook's
(`BOLAB_WEBHOOK_BACKOFF_S`, doubling, at most `BOLAB_WEBHOOK_MAX_ATTEMPTS` tries). The outcome,
"exported" or "failed after N: why", and the parent run's id land in the job record, which the
job view shows as `mlflow`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bo_engine.plan import assemble_result
from bo_engine.spec import JobSpec
from jobmodel import logs
from jobmodel.outbox import MLFLOW
from jobmodel.settings import Settings
from jobmodel.store import JobRecord, JobStatus, JobStore
from service import figures, mlflow_export
from service.outbox_drain import Decision, Drain, Failed, Pace, Settle


class Exporter(Drain):
    channel = MLFLOW

    def __init__(self, store: JobStore, settings: Settings) -> None:
        pace = Pace(
            concurrency=settings.mlflow_concurrency,
            lease_s=settings.mlflow_lease_s,
            poll_s=settings.webhook_poll_s,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
        )
        super().__init__(store, pace)
        self.settings = settings

    async def handle(self, job_id: str) -> Decision:
        # MLflow's client blocks: a thread of its own, never the event loop.
        return await asyncio.to_thread(self._export, job_id)

    def _export(self, job_id: str) -> Decision:
        job = self.store.get(job_id)
        if job is None or job.status != JobStatus.succeeded:
            return Settle("dropped")
        attempt = self.outbox.count_attempt(job_id)
        try:
            client = mlflow_export.client_for(self.settings.mlflow_tracking_uri)
        except ImportError as missing:
            return Settle(f"failed: {missing}")
        try:
            result = job_result(self.store, job)
            exported = mlflow_export.export(
                client,
                result,
                job_id=job_id,
                experiment=self.settings.mlflow_experiment,
                figure=figure(result),
            )
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            logs.event("mlflow.attempt", job_id=job_id, attempt=attempt, ok=False, error=outcome)
            return Failed(attempt, outcome)
        logs.event("mlflow.attempt", job_id=job_id, attempt=attempt, ok=True, run=exported.run_id)
        return Settle("exported", {"mlflow_run_id": exported.run_id})


def job_result(store: JobStore, job: JobRecord) -> dict[str, Any]:
    spec, rounds = JobSpec.model_validate(job.spec), store.round_entries(job.id)
    return assemble_result(spec, store.cells(job.id), job.engine, rounds)


def figure(result: dict[str, Any]) -> bytes | None:
    """The job's figure, or None where its results cannot be drawn (they are exported all the
    same)."""
    try:
        return figures.png(result)
    except Exception:
        return None
