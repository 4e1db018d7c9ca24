"""Structured logs: one JSON object per line for each job event, from the API and the workers.

    {"ts": "2025-01-01T12:00:00.123Z", "level": "info", "event": "job.submitted",
     "job_id": "0193...", "owner": "ada", "pid": 4711, "queue": "cpu"}

The lines go to the process's original stderr (Celery replaces `sys.stderr` in its workers with
a proxy that would wrap each line in its own text format), through a logger of their own, so a
worker started with `--loglevel warning` still writes them. Log shippers (Loki, ELK, `jq`) read
them as they are. Each process's entry point sets their level (`configure`, from the
`log_level` setting); a process that never does logs at INFO.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = "bolab.events"
_log = logging.getLogger(LOGGER)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ms = int(record.created * 1000) % 1000
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "pid": record.process,
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure(level: str) -> None:
    """Write this process's event lines at `level` (a `logging` level name) and above."""
    if not _log.handlers:
        handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
        handler.setFormatter(JsonFormatter())
        _log.addHandler(handler)
        _log.propagate = False  # not again in the text format of the root logger
    _log.setLevel(level.upper())


def event(name: str, *, job_id: str | None = None, owner: str | None = None, **fields: Any) -> None:
    """Log one event as a JSON line; `job_id` and `owner` are in every job's lines."""
    if not _log.handlers:
        configure("INFO")
    level = logging.WARNING if fields.get("error") else logging.INFO
    context = {"job_id": job_id, "owner": owner} if job_id is not None else {}
    _log.log(level, name, extra={"fields": {**context, **fields}})
