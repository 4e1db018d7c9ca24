"""The Redis key layout of the job store: every `bolab:*` key is spelled here and only here.

    bolab:jobs                    zset  every job id (score 0, ids sort by time: newest = last)
    bolab:jobs:{status}           zset  job ids in that status, same ordering
    bolab:job:{id}                hash  the job record (status, spec JSON, timestamps, error, ...)
    bolab:job:{id}:cells          hash  cell index -> full cell result JSON (runs + summary)
    bolab:job:{id}:summaries      hash  cell index -> flat summary row JSON (for status polls)
    bolab:job:{id}:progress       hash  batch index -> runs finished in that batch so far
    bolab:job:{id}:batches        hash  batch index -> wall seconds, once the batch is done
    bolab:job:{id}:cancel         str   present when a cancel was requested
    bolab:workers                 zset  worker name -> unix time of its last heartbeat
    bolab:worker:{name}           hash  queues, pid, host of a live worker (expires)

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
