"""Small helpers shared by the service suites."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bolab.client import TERMINAL, LabClient
from bolab.stack import ApiServer, RedisServer, WorkerProcess

T = TypeVar("T")

# Tiny experiments: a job of this size trains in well under a second on a 2-core CPU.
TINY = {"n": 20, "d": 40, "width": 16, "n_test": 200, "max_steps": 2000, "seeds": 2}
# A run that trains until it is cancelled or killed: a step size far too small to ever reach
# zero loss, and the largest step budget the service takes (about an hour on a 2-core CPU).
ENDLESS = {**TINY, "seeds": 1, "stop": "zero_loss", "lr": 1e-12, "max_steps": 1_000_000_000}


# Leases, orphans and the reaper on a short clock, so fault suites see them act in seconds.
FAST_REAPER = {
    "BOLAB_LEASE_TTL_S": "3",
    "BOLAB_ORPHAN_GRACE_S": "3",
    "BOLAB_REAPER_INTERVAL_S": "0.5",
}


class OwnLab:
    """A suite's own Redis and API (open mode) with a client; workers are made on demand, one
    batch slot each, on the fast reaper clock."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.redis = RedisServer(where / "redis", log_path=where / "redis.log")
        self.redis.start()
        self.api = ApiServer(self.redis.url, log_path=where / "api.log")
        self.api.start()
        self.client = LabClient(self.api.url, timeout=30)

    def new_worker(self, pool: str = "prefork", **env: str) -> WorkerProcess:
        return WorkerProcess(
            self.redis.url,
            concurrency=1,
            pool=pool,
            env={**FAST_REAPER, **env},
            log_path=self.where / f"worker-{pool}.log",
        )

    def stop(self) -> None:
        self.client.close()
        self.api.stop()
        self.redis.stop()


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.05) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def ended(client: LabClient, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job's status until it is terminal (not the event stream: the tests that use this
    are about what happens to the job, not how it is told)."""
    return eventually(
        lambda: (job := client.status(job_id))["status"] in TERMINAL and job,
        timeout=timeout,
        every=0.2,
    )


def as_trained(result: dict[str, Any]) -> dict[str, Any]:
    """A result with each run as it was trained: without `cached` and `source_job`, the two
    fields in which a run served from the run cache (or trained by a job, not locally) differs."""
    cells = [
        {
            **cell,
            "runs": [{k: v for k, v in run.items() if k not in SERVED} for run in cell["runs"]],
        }
        for cell in result["cells"]
    ]
    return {**result, "cells": cells}


SERVED = ("cached", "source_job")


def assert_numbers_equal(a: Any, b: Any, path: str = "", rel: float = 1e-12) -> None:
    """Same structure, same strings and flags, numbers equal to `rel` (exact when possible)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ"
        for key in a:
            assert_numbers_equal(a[key], b[key], f"{path}.{key}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_numbers_equal(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and not isinstance(a, bool):
        assert isinstance(b, int | float), f"{path}: {a!r} vs {b!r}"
        assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-300) or a == b, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@contextmanager
def keyed_api_on_own_redis(where: Path, keys_file: Path, **env: str) -> Iterator[ApiServer]:
    """A Redis of its own and a keyed API on it (no worker), for suites that fill or probe a
    store without disturbing the shared one."""
    redis = RedisServer(where / "redis", log_path=where / "redis.log")
    redis.start()
    server = ApiServer(
        redis.url, env={"BOLAB_KEYS_FILE": str(keys_file), **env}, log_path=where / "api.log"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        redis.stop()
