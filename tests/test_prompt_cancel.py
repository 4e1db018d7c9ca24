"""A cancel, or a batch's time limit, ends the batch promptly on every worker pool.

A stack of its own (Redis, API) and a worker per test on the pool under test, with one batch
slot, as `bolab up` runs it. The job is one cell of many seeds whose runs each cost seconds
before their first step (data and Gram products at n = 1000, d = 20000) and then train until
stopped: a batch that still prepared and reported its queued runs after the stop would hold
the worker for about a minute. So the worker taking the next job soon after is what shows the
batch ended, and the cancelled job has no cell, since its queued runs never trained.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bolab.client import LabClient, LabError
from bolab.stack import WorkerProcess
from tests.helpers import ENDLESS, TINY, OwnLab, ended, eventually

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

SEEDS = 40
# Each run: about 3 s of data, Gram products and baseline on one core of a 2-core CPU; two
# train at once, for over an hour (ENDLESS's step size; steps of milliseconds, as many as the
# cost bound allows), and the other 38 wait.
MANY_SLOW = {
    **ENDLESS, "n": 1000, "d": 20_000, "seeds": SEEDS, "max_steps": 500_000,
    "max_margin_baseline": False,
}  # fmt: skip
# Far less than the ~60 s the queued runs need, far more than a free worker takes for TINY.
NEXT_JOB_WITHIN_S = 20.0


class Stack(OwnLab):
    @contextmanager
    def worker(self, pool: str, **env: str) -> Iterator[WorkerProcess]:
        worker = self.new_worker(pool, **env)
        worker.start()
        try:
            yield worker
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    lab = Stack(tmp_path_factory.mktemp("prompt-cancel"))
    yield lab
    lab.stop()


def training(client: LabClient, job_id: str) -> None:
    """Wait until the batch runs, then a little longer: the first runs are past their data."""
    eventually(lambda: client.status(job_id)["status"] == "running", timeout=60)
    time.sleep(3.0)


def next_job_runs_soon(client: LabClient) -> None:
    """The worker's only batch slot is free again: a tiny job goes through at once."""
    started = time.monotonic()
    tiny = client.submit(TINY)["id"]
    job = ended(client, tiny, timeout=NEXT_JOB_WITHIN_S)
    assert job["status"] == "succeeded", job.get("error")
    assert time.monotonic() - started < NEXT_JOB_WITHIN_S


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_cancelled_batch_never_trains_its_queued_runs(stack: Stack, pool: str) -> None:
    with stack.worker(pool):
        job_id = stack.client.submit({**MANY_SLOW, "seed": 100})["id"]
        training(stack.client, job_id)
        assert stack.client.cancel(job_id)["status"] == "cancelled"
        next_job_runs_soon(stack.client)
        job = stack.client.status(job_id)
    # The runs that were training ended as "cancelled"; the 38 queued ones never started, so
    # the cell of 40 seeds is not complete and nothing was reported for it.
    assert job["progress"]["runs_done"] < SEEDS
    with pytest.raises(LabError) as no_cell:
        stack.client.results(job_id)
    assert no_cell.value.status_code == 409 and "finished no cell" in str(no_cell.value)


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_a_batch_over_its_time_limit_stops_on_every_pool(stack: Stack, pool: str) -> None:
    with stack.worker(pool, BOLAB_BATCH_TIME_LIMIT_S="3"):
        job_id = stack.client.submit({**MANY_SLOW, "seed": 200})["id"]
        job = ended(stack.client, job_id, timeout=60)
        assert job["status"] == "failed"
        assert job["error"] == "batch 0 ran over its time limit of 3 s"
        next_job_runs_soon(stack.client)
