"""The Redis key layout of the job store: every `bolab:*` key is spelled here and only here.

    bolab:jobs                    zset  every job id (score 0, ids sort by time: newest = last)
    bolab:jobs:{status}           zset  job ids in that status, same ordering
    bolab:job:{id}                hash  the job record (status, spec JSON, timestamps, error, ...;
                                        batch_engine: engine facts of the last batch done)
    bolab:job:{id}:cells          hash  cell index -> full cell result JSON (runs + summary)
    bolab:job:{id}:summaries      hash  cell index -> flat summary row JSON (for status polls)
    bolab:job:{id}:progress       hash  batch index -> runs finished in that batch so far
    bolab:job:{id}:batches        hash  batch index -> wall seconds, once the batch is done
    bolab:job:{id}:cancel         str   present when a cancel was requested
    bolab:workers                 zset  worker name -> unix time of its last heartbeat
    bolab:worker:{name}           hash  queues, pid, seen (unix time) of a live worker (expires)
    bolab:jobs:owner:{owner}      zset  that owner's job ids (and `...:{status}` per status)
    bolab:idem:{owner}:{sha256}   str   "body-hash job-id" of an Idempotency-Key (expires)
    bolab:job:{id}:lease:{unit}   str   held while a worker runs unit "plan" (an adaptive job's
                                        later rounds: "plan:{round}") or a batch index;
                                        refreshed by that worker, expires when it dies
    bolab:job:{id}:attempts       hash  unit -> deliveries started (the reaper gives up at a max)
    bolab:reaper                  str   lock: the one reaper that acts now (expires)
    bolab:job:{id}:events         stream  the job's event log for SSE (status, progress, cell, end)
    bolab:metrics:counters        hash  "name|label=value,..." -> counter value (all processes)
    bolab:metrics:hist:{name}     hash  "label=value,...|le" -> observations in that bucket,
                                        "...|sum" and "...|count" (buckets not cumulative)
    bolab:webhooks:due            zset  job id -> unix time its webhook delivery is next due
    bolab:webhooks:attempts       hash  job id -> delivery attempts made so far
    bolab:runs:{scope}            hash  run key -> "job-id cell-index": where the run that key
                                        names is stored (in that job's cells); scope "lab" or
                                        "owner:{owner}" (BOLAB_CACHE_SCOPE)
    bolab:runclaim:{scope}:{key}  str   lease key of the batch training that run now (expires;
                                        stale once that lease is gone)
    bolab:job:{id}:cached         hash  batch index -> runs that batch took from the run cache
    bolab:job:{id}:rounds         hash  round number -> that round's plan JSON (an adaptive job:
                                        requests with their cell indices, its batches)
    bolab:cost:history            stream  one entry per trained cell: its parameters, steps and
                                        seconds (capped; the cost estimate is fitted on it)
    bolab:mlflow:due              zset  job id -> unix time its MLflow export is next due
    bolab:mlflow:attempts         hash  job id -> export attempts made so far

Per-batch hashes keep progress idempotent: a re-delivered batch overwrites its own fields
instead of adding to a counter twice. Celery's broker keys (`celery`, `_kombu.*`, `unacked*`)
live in the same Redis database outside this namespace.
"""

from __future__ import annotations

PREFIX = "bolab"
JOBS = f"{PREFIX}:jobs"
WORKERS = f"{PREFIX}:workers"


def jobs_in(status: str) -> str:
    return f"{JOBS}:{status}"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def cells(job_id: str) -> str:
    return f"{job(job_id)}:cells"


def summaries(job_id: str) -> str:
    return f"{job(job_id)}:summaries"


def progress(job_id: str) -> str:
    return f"{job(job_id)}:progress"


def batches(job_id: str) -> str:
    return f"{job(job_id)}:batches"


def cancel(job_id: str) -> str:
    return f"{job(job_id)}:cancel"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def owner_jobs(owner: str, status: str | None = None) -> str:
    base = f"{JOBS}:owner:{owner}"
    return f"{base}:{status}" if status else base


def idempotency(owner: str, key_hash: str) -> str:
    return f"{PREFIX}:idem:{owner}:{key_hash}"


def lease(job_id: str, unit: str) -> str:
    return f"{job(job_id)}:lease:{unit}"


def attempts(job_id: str) -> str:
    return f"{job(job_id)}:attempts"


REAPER_LOCK = f"{PREFIX}:reaper"


def events(job_id: str) -> str:
    return f"{job(job_id)}:events"


METRIC_COUNTERS = f"{PREFIX}:metrics:counters"
WEBHOOKS_DUE = f"{PREFIX}:webhooks:due"
WEBHOOK_ATTEMPTS = f"{PREFIX}:webhooks:attempts"
COST_HISTORY = f"{PREFIX}:cost:history"
MLFLOW_DUE = f"{PREFIX}:mlflow:due"
MLFLOW_ATTEMPTS = f"{PREFIX}:mlflow:attempts"
# Every outbox's (due set, attempts hash): a deleted job leaves none of them.
OUTBOXES = ((WEBHOOKS_DUE, WEBHOOK_ATTEMPTS), (MLFLOW_DUE, MLFLOW_ATTEMPTS))


def metric_histogram(name: str) -> str:
    return f"{PREFIX}:metrics:hist:{name}"


def run_cache(scope: str) -> str:
    return f"{PREFIX}:runs:{scope}"


def run_claim(scope: str, run_key: str) -> str:
    return f"{PREFIX}:runclaim:{scope}:{run_key}"


def cached(job_id: str) -> str:
    return f"{job(job_id)}:cached"


def rounds(job_id: str) -> str:
    return f"{job(job_id)}:rounds"
