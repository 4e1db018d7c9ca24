"""300 small jobs from 16 concurrent clients on loopback: every one accepted, every
one succeeds, each result present once. Bounded: 300 jobs, 16 clients, minutes at most."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import SMALL, submit_load, wait_all
from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer, WorkerProcess

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

JOBS, CLIENTS = 300, 16


@pytest.fixture(scope="module")
def load_api(
    redis_server: RedisServer, worker_process: WorkerProcess, lab_dir: Path
) -> Iterator[ApiServer]:
    """An API on the session's Redis and worker whose quota lets all 300 jobs queue."""
    server = ApiServer(
        redis_server.url,
        env={"BOLAB_MAX_ACTIVE_JOBS": str(JOBS + 100)},
        log_path=lab_dir / "logs" / "load-api.log",
    )
    server.start()
    yield server
    server.stop()


def test_300_jobs_from_16_clients(load_api: ApiServer) -> None:
    load = submit_load(load_api.url, JOBS, CLIENTS)  # raises on any non-2xx answer
    assert len(load.ids) == len(set(load.ids)) == JOBS  # every one accepted, once
    statuses = wait_all(load_api.url, load.ids, timeout=300)
    assert [s for s in statuses.values() if s != "succeeded"] == []
    with LabClient(load_api.url) as lab:
        for seed, job_id in enumerate(load.ids):  # each job's own result, once
            result = lab.results(job_id)
            (cell,) = result["cells"]
            assert [run["seed"] for run in cell["runs"]] == [seed]
            assert cell["params"]["n"] == SMALL["n"]
        listed = [j["id"] for j in lab.list(status="succeeded", limit=200)["items"]]
    assert len(listed) == len(set(listed))
