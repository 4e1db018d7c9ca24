"""Health probes answer while many clients fetch big results at once: the probes need no worker
thread, and results are built a few at a time, in pieces, so neither the thread pool nor the
event loop is held for long. `bench/health_under_load.py` measures the latencies."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from bench.health_under_load import ResultsLoad, own_api, probe_health, store_big_job
from bolab.stack import ApiServer
from jobmodel.store import JobStore
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(300)

CLIENTS = 80  # more than the thread pool that sync routes share (40)
MEGABYTES = 2.0
PROBE_BOUND_S = 1.0  # generous: a blocked probe waits seconds (the compose check gives up at 3)


@pytest.fixture(scope="module")
def loaded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, JobStore]]:
    with own_api(tmp_path_factory.mktemp("probes")) as (api, store):
        yield api, store


def test_probes_answer_while_big_results_stream(loaded_api: tuple[ApiServer, JobStore]) -> None:
    api, store = loaded_api
    job_id = store_big_job(store, MEGABYTES)
    path = f"/v1/jobs/{job_id}/results"
    whole = httpx.get(f"{api.url}{path}", timeout=60)
    assert whole.status_code == 200 and len(whole.content) > MEGABYTES * 0.9e6
    assert len(whole.json()["cells"]) == 50  # the document built in pieces is one JSON value

    with ResultsLoad(api.url, path, CLIENTS) as load:
        eventually(lambda: load.served >= 1, timeout=60)  # the load is on
        latencies = probe_health(api.url, seconds=3.0)
        started = time.perf_counter()
        ready = httpx.get(f"{api.url}/readyz", timeout=60)
        ready_s = time.perf_counter() - started
        served_during = load.served
    assert load.failed == []
    assert served_during >= 2  # results kept flowing while the probes ran
    assert max(latencies) < PROBE_BOUND_S, sorted(latencies)[-5:]
    assert ready.status_code == 503 and ready.json()["redis"] is True  # no worker: not ready
    assert ready_s < PROBE_BOUND_S


def test_results_json_is_the_whole_document(loaded_api: tuple[ApiServer, JobStore]) -> None:
    """Encoded cell by cell, the document is still the one `bolab run --local` writes: cells in
    grid order, then axes and engine; NaN as null."""
    api, store = loaded_api
    job_id = store_big_job(store, 0.01)
    cell = store.cells(job_id)[3]
    cell["summary"]["test_error_mean"] = float("nan")
    store.put_cell(job_id, cell, cell["summary"])
    result = httpx.get(f"{api.url}/v1/jobs/{job_id}/results", timeout=30).json()
    assert list(result) == ["cells", "axes", "theory", "engine"]
    assert [c["index"] for c in result["cells"]] == list(range(50))
    assert result["cells"][3]["summary"]["test_error_mean"] is None
    assert result["engine"] == {"wall_seconds": 0.0}
    assert result["axes"] == ["gamma"]
