"""`/metrics` values after a known sequence of jobs, on a lab of its own with two worker
processes: numbers the workers produce are summed in Redis, not per process, and survive a
worker leaving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer, WorkerProcess
from jobmodel.store import JobStore
from tests.helpers import TINY, compute_seconds, eventually
from tests.test_service_jobs import SLOW_GRID

pytestmark = pytest.mark.timeout(240)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, JobStore, list]]:
    where: Path = tmp_path_factory.mktemp("metered")
    redis = RedisServer(where / "redis", log_path=where / "redis.log")
    redis.start()
    api = ApiServer(redis.url, log_path=where / "api.log")
    # Two worker processes, both on queue cpu only: gpu jobs wait in their queue.
    workers = [
        WorkerProcess(redis.url, "cpu", 1, "prefork", log_path=where / f"worker{i}.log")
        for i in range(2)
    ]
    store = JobStore.from_url(redis.url)
    try:
        for process in (api, *workers):
            process.start(wait=False)
        for process in (api, *workers):
            process.wait_ready()
        yield api.url, store, workers
    finally:
        store.redis.close()
        for process in (*workers, api, redis):
            process.stop()


def test_metric_values_after_a_known_sequence(metered: tuple[str, JobStore, list]) -> None:
    url, store, workers = metered
    lab = LabClient(url, timeout=30)
    empty = scrape(url)
    assert value(empty, "bolab_workers", queue="cpu") == 2
    assert value(empty, "bolab_workers", queue="gpu") == 0
    assert value(empty, "bolab_jobs_submitted_total", queue="cpu") == 0

    # Two jobs that succeed (4 + 2 runs), side by side on the two workers.
    done = [lab.submit({**TINY, "grid": {"gamma": [0.05, 0.2]}})["id"], lab.submit(TINY)["id"]]
    # One cancelled while running: its short cell finished, its long one stops as cancelled.
    slow = lab.submit(SLOW_GRID)["id"]
    for job_id in done:
        assert lab.wait(job_id, timeout=90)["status"] == "succeeded"
    eventually(lambda: lab.status(slow)["summary"], timeout=60)
    running = scrape(url)
    assert value(running, "bolab_jobs_running") == 1
    assert value(running, "bolab_jobs", status="running") == 1
    lab.cancel(slow)
    eventually(lambda: len(lab.results(slow)["cells"]) == 2, timeout=30)
    # One for the gpu queue, which nobody serves: it waits there, then fails from the API side.
    gpu = lab.submit({**TINY, "device": "cuda"})["id"]
    queued = scrape(url)
    assert value(queued, "bolab_queue_depth", queue="gpu") == 1
    assert value(queued, "bolab_queue_depth", queue="cpu") == 0
    assert value(queued, "bolab_jobs", status="queued") == 1
    store.mark_failed(gpu, "operator gave up")

    # Read what happened from the job store, then compare with what /metrics says.
    results = [lab.results(j) for j in (*done, slow)]
    runs = [run for result in results for cell in result["cells"] for run in cell["runs"]]
    assert len(runs) == 4 + 2 + 2
    views = [lab.status(j) for j in (*done, slow, gpu)]
    m = scrape(url)

    assert value(m, "bolab_jobs_submitted_total", queue="cpu") == 3
    assert value(m, "bolab_jobs_submitted_total", queue="gpu") == 1
    finished = {
        ("succeeded", "cpu"): 2,
        ("cancelled", "cpu"): 1,
        ("failed", "gpu"): 1,
        ("failed", "cpu"): 0,
    }
    for (status, queue), count in finished.items():
        assert value(m, "bolab_jobs_finished_total", status=status, queue=queue) == count
    for status, count in {"succeeded": 2, "cancelled": 1, "failed": 1, "queued": 0}.items():
        assert value(m, "bolab_jobs", status=status) == count
    assert value(m, "bolab_jobs_running") == 0

    # Runs and GD steps: every run of every cell, whichever worker process trained it.
    assert value(m, "bolab_runs_trained_total", queue="cpu") == len(runs)
    steps = sum(run["steps"] for run in runs)
    assert value(m, "bolab_gd_steps_total", queue="cpu") == steps
    trained = value(m, "bolab_train_seconds_total", queue="cpu")
    compute = sum(compute_seconds(store, j) for j in done)  # finished batches' wall times
    assert compute <= trained < compute + 30  # plus the cancelled batch's time
    assert value(m, "bolab_gd_steps_per_second", queue="cpu") == pytest.approx(steps / trained)

    # Histograms: one observation per run, one per job, with the job's own duration.
    assert value(m, "bolab_run_duration_seconds_count", queue="cpu") == len(runs)
    inf = value(m, "bolab_run_duration_seconds_bucket", queue="cpu", le="+Inf")
    assert inf == len(runs)
    bounds = ("0.01", "0.1", "1.0", "10.0", "60.0", "3600.0", "+Inf")
    cumulative = [value(m, "bolab_run_duration_seconds_bucket", queue="cpu", le=b) for b in bounds]
    assert cumulative == sorted(cumulative)  # cumulative, as Prometheus wants
    by_status = {"succeeded": views[:2], "cancelled": views[2:3], "failed": views[3:]}
    for status, jobs in by_status.items():
        assert value(m, "bolab_job_duration_seconds_count", status=status) == len(jobs)
        expected = sum(_seconds(j["finished_at"]) - _seconds(j["created_at"]) for j in jobs)
        got = value(m, "bolab_job_duration_seconds_sum", status=status)
        assert got == pytest.approx(expected, abs=1e-3)

    # A worker leaves: the live-worker gauge drops, the counters it produced stay.
    workers[1].stop()
    after = scrape(url)
    assert value(after, "bolab_workers", queue="cpu") == 1
    assert value(after, "bolab_runs_trained_total", queue="cpu") == len(runs)
    assert value(after, "bolab_gd_steps_total", queue="cpu") == steps
    lab.close()


def test_http_requests_by_route_template_and_status(metered: tuple[str, JobStore, list]) -> None:
    url, _, _ = metered
    route = "/v1/jobs/{job_id}"
    before = scrape(url)
    with LabClient(url) as lab:
        job_id = lab.submit(TINY)["id"]
        for _ in range(3):
            lab.http.get(f"/v1/jobs/{job_id}")
        lab.http.get("/v1/jobs/0123456789abcdef0123")  # 404
        lab.http.get("/no/such/path")  # unmatched: one shared label, not one per path
        lab.wait(job_id, timeout=60)
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("bolab_http_requests_total", method="GET", route=route, status="200") >= 4
    assert delta("bolab_http_requests_total", method="GET", route=route, status="404") == 1
    assert delta("bolab_http_requests_total", method="POST", route="/v1/jobs", status="202") == 1
    assert delta("bolab_http_requests_total", method="GET", route="unmatched", status="404") == 1
    count = delta("bolab_http_request_duration_seconds_count", method="GET", route=route)
    assert count == delta(
        "bolab_http_requests_total", method="GET", route=route, status="200"
    ) + delta("bolab_http_requests_total", method="GET", route=route, status="404")
    assert not any(job_id in dict(labels).get("route", "") for _, labels in after)


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
