"""The measured cost of trained cells: a capped stream the cost estimate is refitted from.

Workers append one entry per finished cell (`bo_engine.estimate.cell_record`: parameters, steps
of each run, seconds since its batch started, device kind, cores); the API reads the newest
`MAX_ENTRIES` back. The stream is trimmed approximately (`MAXLEN ~`), so it costs Redis a
bounded few hundred bytes per entry.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from bo_engine.estimate import cell_record
from jobmodel import keys

MAX_ENTRIES = 5000


def record(
    pipe: redis.client.Pipeline, job_id: str, queue: str, cell: dict[str, Any], seconds: float
) -> None:
    """Append a finished cell trained by this process (a worker) `seconds` after its batch
    started; `queue` ("cpu" or "gpu") is the device kind."""
    entry = cell_record(
        job_id, cell, seconds, queue, len(os.sched_getaffinity(0)), time.time() - seconds
    )
    if entry["steps"]:
        pipe.xadd(
            keys.COST_HISTORY, {"cell": json.dumps(entry)}, maxlen=MAX_ENTRIES, approximate=True
        )


def read(client: redis.Redis, count: int = MAX_ENTRIES) -> list[dict[str, Any]]:
    """The newest `count` entries, oldest first."""
    entries = client.xrevrange(keys.COST_HISTORY, count=count)
    return [json.loads(fields["cell"]) for _, fields in reversed(entries)]
