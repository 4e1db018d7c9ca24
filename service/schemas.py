"""The API's response models: the JSON contract of every route (requests use `JobSpec`)."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from bo_engine.estimate import JobEstimate
from jobmodel.events import progress_data
from jobmodel.store import JOB_ID_PATTERN, JobRecord, JobStatus, Progress

JOB_ID_EXAMPLE = "0193a1b2c3d4e5f60718"
# The `{job_id}` of every route: anything but a job id answers 404 (service.errors), like an
# id of no job, before it reaches the store.
JobId = Annotated[
    str,
    Path(
        pattern=JOB_ID_PATTERN,
        description="job id, as returned by POST /v1/jobs (20 lowercase hex digits)",
        examples=[JOB_ID_EXAMPLE],
    ),
]


LINKS_EXAMPLE = {
    "job": f"/v1/jobs/{JOB_ID_EXAMPLE}",
    "results": f"/v1/jobs/{JOB_ID_EXAMPLE}/results",
    "csv": f"/v1/jobs/{JOB_ID_EXAMPLE}/results?format=csv",
    "plot": f"/v1/jobs/{JOB_ID_EXAMPLE}/plot.png",
    "cancel": f"/v1/jobs/{JOB_ID_EXAMPLE}/cancel",
}
PROGRESS_EXAMPLE = {
    "runs_done": 6,
    "runs_cached": 2,
    "runs_total": 10,
    "fraction": 0.6,
    "batches_done": 1,
    "batches_total": 2,
}


def _example(value: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


class Links(BaseModel):
    model_config = _example(LINKS_EXAMPLE)

    job: str = Field(description="this job's status")
    results: str = Field(description="full result JSON (409 until there are results)")
    csv: str = Field(description="one CSV row per cell")
    plot: str = Field(description="the figure `bolab plot` draws, as PNG")
    cancel: str = Field(description="POST here to stop the job")

    @classmethod
    def for_job(cls, job_id: str) -> Links:
        base = f"/v1/jobs/{job_id}"
        return cls(
            job=base,
            results=f"{base}/results",
            csv=f"{base}/results?format=csv",
            plot=f"{base}/plot.png",
            cancel=f"{base}/cancel",
        )


class JobAccepted(BaseModel):
    model_config = _example({"id": JOB_ID_EXAMPLE, "status": "queued", "links": LINKS_EXAMPLE})

    id: str = Field(description="job id: sorts by submission time")
    status: JobStatus
    links: Links


class ProgressView(BaseModel):
    model_config = _example(PROGRESS_EXAMPLE)

    runs_done: int = Field(description="runs finished (stopped by rule, max_steps or cancel)")
    runs_cached: int = Field(
        0, description="of runs_done, those taken from the lab's run cache (not trained again)"
    )
    runs_total: int
    fraction: float = Field(ge=0, le=1)
    batches_done: int
    batches_total: int | None = Field(description="null until a worker has planned the job")
    round: int | None = Field(
        None,
        description="an adaptive job: the round planned last (0 first; batches are numbered "
        "across rounds); null for a job whose cells are known at submission, or before its "
        "first round",
    )
    runs_bound: int | None = Field(
        None,
        description="an adaptive job: the most runs it may use, its budget (lines x "
        "max_cells_per_line x the most seeds); runs_total is the same, and fraction is of it "
        "until the job succeeds (then 1)",
    )


class JobSummary(BaseModel):
    """A job as listed: no spec, no results."""

    id: str
    status: JobStatus
    owner: str = Field("", description="who submitted it (empty until authentication exists)")
    queue: str = Field(description="'cpu' or 'gpu'")
    progress: ProgressView
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = Field(None, description="why the job failed")
    links: Links


class MlflowExport(BaseModel):
    """The job's automatic MLflow export (BOLAB_MLFLOW_TRACKING_URI)."""

    model_config = _example({"status": "exported", "run_id": "5f0c...", "detail": None})

    status: Literal["pending", "exported", "failed", "dropped"] = Field(
        description="pending: queued or being retried; exported; failed: gave up (see detail); "
        "dropped: the job was gone or not succeeded when its turn came"
    )
    run_id: str | None = Field(None, description="the job's parent run in MLflow, once exported")
    detail: str | None = Field(None, description="why it failed")

    @classmethod
    def from_record(cls, outcome: str | None, run_id: str | None) -> MlflowExport | None:
        if outcome is None:
            return None
        word = outcome.split(maxsplit=1)[0].rstrip(":")
        status = word if word in ("pending", "exported", "dropped") else "failed"
        return cls(status=status, run_id=run_id, detail=outcome if status == "failed" else None)


class JobView(JobSummary):
    """A job in full: its spec and the summary row of every cell finished so far."""

    model_config = _example(
        {
            "id": JOB_ID_EXAMPLE,
            "status": "running",
            "owner": "",
            "queue": "cpu",
            "progress": PROGRESS_EXAMPLE,
            "created_at": "2025-01-01T12:00:00.000000Z",
            "started_at": "2025-01-01T12:00:00.150000Z",
            "finished_at": None,
            "error": None,
            "spec": {"n": 50, "d": 100, "gamma": 0.1, "seeds": 5},
            "summary": [
                {
                    "index": 0,
                    "n": 50,
                    "d": 100,
                    "gamma": 0.1,
                    "test_error_mean": 0.012,
                    "test_error_std": 0.004,
                    "interpolated_fraction": 1.0,
                    "runs": 5,
                }
            ],
            "links": LINKS_EXAMPLE,
        }
    )

    spec: dict[str, Any] = Field(description="the JobSpec as submitted")
    summary: list[dict[str, Any]] = Field(
        description="one flat row per finished cell (params, <metric>_mean, <metric>_std, ...)"
    )
    mlflow: MlflowExport | None = Field(
        None, description="its automatic MLflow export; null where the deployment has none"
    )


class JobPage(BaseModel):
    model_config = _example({"items": [], "next_cursor": None})

    items: list[JobSummary] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class JobResult(BaseModel):
    """The same document `bolab run --local` writes; partial for a cancelled or failed job."""

    model_config = _example(
        {
            "cells": [
                {
                    "index": 0,
                    "params": {"n": 50, "d": 100, "gamma": 0.1, "width": 64},
                    "runs": [
                        {
                            "seed": 0,
                            "steps": 812,
                            "test_error": 0.011,
                            "interpolated": True,
                            "cached": True,
                            "source_job": "0193a1b2c3d4e5f60700",
                        }
                    ],
                    "summary": {
                        "test_error": {"mean": 0.011, "std": 0.0, "min": 0.011, "max": 0.011}
                    },
                }
            ],
            "axes": [],
            "engine": {
                "version": "0.1.0",
                "torch": "2.13.0",
                "device": "cpu",
                "dtype": "float32",
                "wall_seconds": 0.42,
            },
        }
    )

    cells: list[dict[str, Any]] = Field(
        description="one entry per grid cell, in grid order; each run says `cached` (taken "
        "from the lab's run cache) and `source_job` (the job that trained it, null when the "
        "caller may not see that job), the only fields in which a cached run differs from the "
        "run it came from"
    )
    axes: list[str] = Field(description="the swept grid axes, in grid order")
    engine: dict[str, Any] | None = Field(description="null when the job did not finish")


class Health(BaseModel):
    model_config = _example({"status": "ready", "redis": True, "workers": 1})

    status: str = Field(description="'ok' (healthz), 'ready' or 'not ready' (readyz)")
    redis: bool | None = Field(None, description="job store answered a ping")
    workers: int | None = Field(None, description="workers with a recent heartbeat")


Range = Annotated[list[float], Field(min_length=2, max_length=2, description="[lo, hi]")]


class EstimatedSeconds(BaseModel):
    cpu: Range = Field(description="wall seconds on one CPU worker, [lo, hi]")
    gpu: Range | None = Field(description="wall seconds on one GPU worker; null: no GPU data yet")


class JobEstimateView(BaseModel):
    """What a job would take: the answer of POST /v1/jobs?dry_run=true."""

    model_config = _example(
        {
            "cells": 40,
            "runs": 400,
            "runs_cached": 0,
            "runs_to_train": 400,
            "gd_steps": [61000, 540000],
            "seconds": {"cpu": [9.5, 61.0], "gpu": None},
            "peak_batch_bytes": 712000000,
            "violations": [],
        }
    )

    cells: int = Field(description="grid cells")
    runs: int = Field(description="runs in all (cells x seeds)")
    runs_cached: int = Field(description="runs the run cache already holds")
    runs_to_train: int = Field(description="runs that would train (runs - runs_cached)")
    gd_steps: Range = Field(description="GD steps of the runs to train, [lo, hi]")
    seconds: EstimatedSeconds
    peak_batch_bytes: int = Field(description="peak memory of the largest batch (cost model)")
    violations: list[str] = Field(
        description="every bound the job would break, worded as the 422 of a submit; empty: "
        "it would be accepted"
    )


def estimate_view(estimate: JobEstimate, violations: list[str]) -> JobEstimateView:
    return JobEstimateView(**asdict(estimate), violations=violations)


class ErrorBody(BaseModel):
    model_config = _example({"detail": f"no job with id {JOB_ID_EXAMPLE!r}"})

    detail: str


def _time(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def progress_view(job: JobRecord, progress: Progress) -> ProgressView:
    data = progress_data(progress.runs_done, job.runs_total)
    if job.adaptive and job.status == JobStatus.succeeded:
        data["fraction"] = 1.0  # done under its budget
    return ProgressView(
        **data,
        runs_cached=progress.runs_cached,
        batches_done=progress.batches_done,
        batches_total=job.batches_total,
        round=job.round if job.adaptive else None,
        runs_bound=job.runs_total if job.adaptive else None,
    )


def job_summary(job: JobRecord, progress: Progress) -> JobSummary:
    return JobSummary(
        id=job.id,
        status=job.status,
        owner=job.owner,
        queue=job.queue,
        progress=progress_view(job, progress),
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        error=job.error,
        links=Links.for_job(job.id),
    )


def job_view(job: JobRecord, progress: Progress, summary: list[dict[str, Any]]) -> JobView:
    return JobView(
        **job_summary(job, progress).model_dump(),
        spec=job.spec,
        summary=finite(summary),
        mlflow=MlflowExport.from_record(job.mlflow_export, job.mlflow_run_id),
    )


def finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
