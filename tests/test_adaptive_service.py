"""Adaptive jobs on the service, with real processes (Redis, API, a prefork worker):

- a refine job whose worker is SIGKILLed mid-job (rounds planned, more to come) succeeds once
  a worker runs again, with every run exactly once, and the same cells, boundaries, scaling and
  rounds as `bolab run --local` of the same spec;
- its progress says the round and the budget, its event stream has one `round` event per
  round, and `plot.png?kind=boundary` draws its boundaries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

from bo_engine.adaptive import runs_bound
from bo_engine.spec import JobSpec
from bolab.cli import app
from jobmodel import keys
from tests.helpers import TINY, OwnLab, as_trained, ended, eventually

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

# Two lines, at most 6 cells each, 3 to 12 seeds a cell: about 7 rounds and 130 runs, a few
# seconds of training on a 2-core CPU.
REFINE_JOB = {
    **TINY,
    "seeds": {"min": 3, "max": 12, "target": {"metric": "test_error", "ci95_halfwidth": 0.03}},
    "grid": {"n": [20, 40], "d_over_n": [2]},
    "refine": {"axis": "gamma", "range": [0.001, 0.5], "scale": "log", "level": 0.1,
               "rel_tolerance": 0.3, "max_cells_per_line": 6},
    "max_margin_baseline": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnLab]:
    own = OwnLab(tmp_path_factory.mktemp("adaptive-service"))
    own.worker = own.new_worker()  # type: ignore[attr-defined]
    own.worker.start()  # type: ignore[attr-defined]
    yield own
    own.worker.stop()  # type: ignore[attr-defined]
    own.stop()


def _run_local(spec: dict, where: Path) -> dict:
    (where / "spec.json").write_text(json.dumps(spec))
    out = where / "local.json"
    done = CliRunner().invoke(app, ["run", "--local", str(where / "spec.json"), "--out", str(out)])
    assert done.exit_code == 0, done.stderr
    return json.loads(out.read_text())


def _without_walls(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rounds]


def test_refine_job_survives_a_sigkill_and_equals_the_local_run(
    lab: OwnLab, tmp_path: Path
) -> None:
    job_id = lab.client.submit(REFINE_JOB)["id"]
    r = redis.Redis.from_url(lab.redis.url, decode_responses=True)
    # Mid-job: a later round planned, the job still running; kill while a unit is leased.
    eventually(lambda: int(r.hget(keys.job(job_id), "round") or 0) >= 2, timeout=90, every=0.01)
    eventually(lambda: r.keys(keys.lease(job_id, "*")), timeout=30, every=0.005)
    lab.worker.kill()  # type: ignore[attr-defined]  # SIGKILL the worker and its children
    assert lab.client.status(job_id)["status"] == "running"
    lab.worker = lab.new_worker()  # type: ignore[attr-defined]
    lab.worker.start()  # type: ignore[attr-defined]
    job = ended(lab.client, job_id, 150)
    assert job["status"] == "succeeded", job.get("error")

    result = lab.client.results(job_id)
    for cell in result["cells"]:  # every run exactly once: seeds 0, 1, ... with no repeat
        assert [run["seed"] for run in cell["runs"]] == list(range(len(cell["runs"])))
    runs = sum(len(c["runs"]) for c in result["cells"])
    assert runs == sum(r["runs"] for r in result["rounds"])
    progress = job["progress"]
    assert progress["runs_done"] == runs and progress["fraction"] == 1.0
    assert progress["runs_bound"] == runs_bound(JobSpec.model_validate(REFINE_JOB))
    assert progress["round"] == len(result["rounds"])  # the last, empty round closed it

    local = _run_local(REFINE_JOB, tmp_path)
    assert as_trained(result)["cells"] == as_trained(local)["cells"]
    assert result["boundaries"] == local["boundaries"]
    assert result["scaling"] == local["scaling"] and result["refine"] == local["refine"]
    assert _without_walls(result["rounds"]) == _without_walls(local["rounds"])

    events = [e for e in lab.client.events(job_id) if e["event"] == "round"]
    assert [e["data"]["round"] for e in events] == list(range(len(result["rounds"]) + 1))
    plot = httpx.get(f"{lab.api.url}/v1/jobs/{job_id}/plot.png?kind=boundary", timeout=60)
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"


def test_cancel_between_rounds_plans_no_next_round(lab: OwnLab) -> None:
    """A cancel lands while a round trains: the job ends cancelled, and no round is planned
    after the one running then (the next planning step sees the cancel and does nothing)."""
    slow = {**REFINE_JOB, "stop": "zero_loss", "lr": 1e-9, "max_steps": 200_000}
    job_id = lab.client.submit(slow)["id"]
    r = redis.Redis.from_url(lab.redis.url, decode_responses=True)
    eventually(lambda: r.exists(keys.lease(job_id, "0")), timeout=60)
    lab.client.cancel(job_id)
    round_then = r.hget(keys.job(job_id), "round")
    eventually(lambda: not r.keys(keys.lease(job_id, "*")), timeout=30)
    time.sleep(1.0)  # a next planning step, had one been queued, would have run by now
    assert lab.client.status(job_id)["status"] == "cancelled"
    assert r.hget(keys.job(job_id), "round") == round_then
    assert r.hlen(keys.rounds(job_id)) == int(round_then) + 1
