"""A job's event log: a Redis Stream per job that `GET /v1/jobs/{id}/events` serves as SSE.

Kinds: `status` (queued, running), `progress` (runs done), `cell` (a finished cell's summary
row), `round` (an adaptive job planned a round: its number, cells and runs, the runs done so
far and the budget), `end` (the terminal status; always the last event). Entry ids are the
stream's own (`1700000000000-0`): increasing, so a client that sends the last id it saw as
`Last-Event-ID` resumes right after it without loss. `job_ended` runs once per job, from
whichever process made the terminal transition: it writes the `end` event, the finished-job
metrics and queues the webhook (and the MLflow export), in one pipeline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from jobmodel import counters, keys, logs

STATUS, PROGRESS, CELL, ROUND, END = "status", "progress", "cell", "round", "end"
# Bounds a job's log (progress events come at most a few per second per batch); a job long
# enough to overflow it still keeps its newest events and every record in the job store.
MAX_EVENTS = 20_000
# Set fields of a job record only while the record exists (a late writer must not leave a
# record holding those fields alone behind a deleted job). ARGV: field, value, field, value, ...
SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def encode(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def emit(client: counters.Client, job_id: str, kind: str, data: dict[str, Any]) -> None:
    """Append an event; the stream keeps about its newest MAX_EVENTS."""
    client.xadd(
        keys.events(job_id),
        {"event": kind, "data": encode(data)},
        maxlen=MAX_EVENTS,
        approximate=True,
    )


def progress_data(runs_done: int, runs_total: int) -> dict[str, Any]:
    done = min(runs_done, runs_total)
    return {
        "runs_done": done,
        "runs_total": runs_total,
        "fraction": done / runs_total if runs_total else 1.0,
    }


def job_ended(client: redis.Redis, job_id: str, *, export_to_mlflow: bool = False) -> None:
    """The job just reached a terminal status: final event, metrics, webhook, log line; and
    with `export_to_mlflow`, a job that succeeded is queued for its MLflow export."""
    raw = client.hgetall(keys.job(job_id))
    if not raw:
        return
    runs_done = sum(int(v) for v in client.hvals(keys.progress(job_id)))
    status, queue = raw["status"], raw.get("queue", "cpu")
    finished = float(raw.get("finished_at") or time.time())
    duration = max(0.0, finished - float(raw["created_at"]))
    pipe = client.pipeline(transaction=True)
    emit(
        pipe,
        job_id,
        END,
        {
            "status": status,
            "error": raw.get("error") or None,
            "finished_at": finished,
            "progress": progress_data(runs_done, int(raw["runs_total"])),
        },
    )
    counters.inc(pipe, "jobs_finished_total", {"status": status, "queue": queue})
    counters.observe(pipe, "job_duration_seconds", {"status": status}, duration)
    if raw.get("notify_url"):
        pipe.zadd(keys.WEBHOOKS_DUE, {job_id: time.time()})
    if export_to_mlflow and status == "succeeded":
        pipe.zadd(keys.MLFLOW_DUE, {job_id: time.time()})
        pipe.eval(SET_IF_EXISTS, 1, keys.job(job_id), "mlflow_export", "pending")
    pipe.execute()
    logs.event(
        "job.finished",
        job_id=job_id,
        owner=raw.get("owner", ""),
        status=status,
        queue=queue,
        seconds=round(duration, 3),
        error=raw.get("error") or None,
    )
