"""End to end over HTTP: submit, follow, fetch results, partial results, cancel, listing."""

from __future__ import annotations

import csv
import io

import pytest

from bolab.client import LabClient, LabError
from tests.helpers import ENDLESS, TINY, as_trained, assert_numbers_equal, eventually

pytestmark = pytest.mark.timeout(120)

# Same shape (one batch): cell 0 stops at 50 steps, cell 1 would run for about an hour.
SLOW_GRID = {**ENDLESS, "grid": {"max_steps": [50, ENDLESS["max_steps"]]}}


def test_submit_poll_and_fetch_everything(lab: LabClient) -> None:
    http = lab.http
    response = http.post("/v1/jobs", json={**TINY, "grid": {"gamma": [0.05, 0.2]}})
    assert response.status_code == 202
    accepted = response.json()
    job_id = accepted["id"]
    assert accepted["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert accepted["links"]["results"] == f"/v1/jobs/{job_id}/results"

    job = lab.wait(job_id, timeout=60)
    assert job["status"] == "succeeded", job.get("error")
    progress = dict(job["progress"])
    assert 0 <= progress.pop("runs_cached") <= 4  # the session's lab may hold these runs
    assert progress.pop("round") is None and progress.pop("runs_bound") is None  # not adaptive
    assert progress == {
        "runs_done": 4, "runs_total": 4, "fraction": 1.0, "batches_done": 1, "batches_total": 1,
    }  # fmt: skip
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert [row["gamma"] for row in job["summary"]] == [0.05, 0.2]
    assert job["spec"]["grid"] == {"gamma": [0.05, 0.2]}

    result = lab.results(job_id)
    assert [cell["index"] for cell in result["cells"]] == [0, 1]
    assert all(len(cell["runs"]) == 2 for cell in result["cells"])
    assert {"version", "torch", "device", "dtype", "wall_seconds"} <= set(result["engine"])
    assert result["engine"]["device"] == "cpu"

    rows = list(csv.DictReader(io.StringIO(lab.results_text(job_id, "csv"))))
    assert [float(r["gamma"]) for r in rows] == [0.05, 0.2]
    assert float(rows[0]["test_error_mean"]) == result["cells"][0]["summary"]["test_error"]["mean"]
    png = http.get(f"/v1/jobs/{job_id}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    one_axis = http.get(f"/v1/jobs/{job_id}/plot.png", params={"kind": "heatmap"})
    assert one_axis.status_code == 409 and "two swept axes" in one_axis.json()["detail"]
    overlaid = http.get(f"/v1/jobs/{job_id}/plot.png", params={"overlay": "true"})
    assert overlaid.status_code == 200 and overlaid.content != png.content
    bad = http.get(f"/v1/jobs/{job_id}/plot.png", params={"overlay": "maybe"})
    assert bad.status_code == 422
    assert ["query", "overlay"] in [e["loc"] for e in bad.json()["detail"]]
    assert result["theory"] == {
        "benign_gamma_n": 1.0, "benign_d_over_n": 1.0, "harmful_gamma_d_over_alpha3": 1.0,
    }  # fmt: skip


def test_results_equal_a_local_run(lab: LabClient) -> None:
    from bo_engine.runner import run_spec
    from bo_engine.spec import JobSpec

    spec = {**TINY, "dtype": "float64", "grid": {"n": [20, 30], "d_over_n": [1, 3]}}
    job_id = lab.submit(spec)["id"]
    assert lab.wait(job_id, timeout=60)["status"] == "succeeded"
    remote = lab.results(job_id)
    local = run_spec(JobSpec.model_validate(spec))
    assert set(remote) == set(local)  # the same document, not just the same numbers
    remote.pop("engine")
    local.pop("engine")
    assert_numbers_equal(as_trained(remote), as_trained(local))


def test_grid_shows_partial_results_then_cancels(lab: LabClient) -> None:
    job_id = lab.submit(SLOW_GRID)["id"]

    # The short cell is summarised while the long one still trains.
    job = eventually(lambda: (j := lab.status(job_id))["summary"] and j, timeout=30)
    assert job["status"] == "running"
    assert [row["max_steps"] for row in job["summary"]] == [50]
    assert 0 < job["progress"]["runs_done"] < job["progress"]["runs_total"]
    with pytest.raises(LabError) as not_yet:
        lab.results(job_id)
    assert not_yet.value.status_code == 409

    cancelled = lab.cancel(job_id)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]

    # The worker notices: the long cell ends with its run stopped as cancelled.
    def stopped() -> dict | None:
        cells = lab.results(job_id)["cells"]
        return cells if len(cells) == 2 else None

    cells = eventually(stopped, timeout=10)
    assert cells[0]["runs"][0]["stop_reason"] == "max_steps"
    assert cells[1]["runs"][0]["stop_reason"] == "cancelled"
    assert lab.results(job_id)["engine"] is None
    assert lab.status(job_id)["status"] == "cancelled"
    assert lab.cancel(job_id)["status"] == "cancelled"  # cancelling twice is harmless


def test_cancel_a_queued_job_and_a_finished_one(lab: LabClient) -> None:
    blockers = [lab.submit(SLOW_GRID)["id"] for _ in range(2)]  # occupy both worker slots
    eventually(lambda: all(lab.status(b)["status"] == "running" for b in blockers), timeout=30)
    queued = lab.submit(TINY)["id"]
    assert lab.status(queued)["status"] == "queued"
    assert lab.cancel(queued)["status"] == "cancelled"
    for blocker in blockers:
        lab.cancel(blocker)
    with pytest.raises(LabError) as nothing:
        lab.results(queued)
    assert nothing.value.status_code == 409

    done = lab.submit(TINY)["id"]
    assert lab.wait(done, timeout=60)["status"] == "succeeded"
    with pytest.raises(LabError) as ended:
        lab.cancel(done)
    assert ended.value.status_code == 409
    assert lab.status(queued)["status"] == "cancelled"  # and it never ran
    assert lab.status(queued)["progress"]["runs_done"] == 0


def test_list_newest_first_with_cursor_and_filter(lab: LabClient) -> None:
    ids = [lab.submit(TINY)["id"] for _ in range(3)]
    first = lab.list(limit=2)
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = lab.list(limit=2, cursor=first["next_cursor"])
    assert second["items"][0]["id"] == ids[0]
    for job_id in ids:
        lab.wait(job_id, timeout=60)
    done = lab.list(status="succeeded", limit=200)["items"]
    assert set(ids) <= {j["id"] for j in done}
    assert all(j["status"] == "succeeded" for j in done)
    assert lab.http.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert lab.http.get("/v1/jobs", params={"cursor": "not hex!"}).status_code == 422
    assert lab.http.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_failed_job_reports_its_error(lab: LabClient) -> None:
    # A CPU-only worker has no CUDA: the job fails with the engine's reason, the worker lives.
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    job_id = lab.submit({**TINY, "device": "cuda"})["id"]
    job = lab.wait(job_id, timeout=60)
    assert job["status"] == "failed"
    assert "CUDA" in job["error"]
    assert job["queue"] == "gpu"


def test_health_probes(lab: LabClient) -> None:
    assert lab.http.get("/healthz").json() == {"status": "ok", "redis": None, "workers": None}
    ready = lab.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] is True and ready.json()["workers"] >= 1


def test_docs_are_served(lab: LabClient) -> None:
    docs = lab.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert lab.http.get("/openapi.json").json()["info"]["title"] == "bolab lab service"
