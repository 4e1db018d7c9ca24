"""The cost estimate: the steps model and its fit (pure), the measured history workers write,
and the dry run of POST /v1/jobs (in process, real Redis): 200, nothing stored, every bound."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bo_engine.estimate import (
    EstimateModel,
    cell_record,
    default_model,
    default_records,
    estimate,
    features,
    fit,
    run_parts,
    steps_range,
)
from bo_engine.spec import Cell, JobSpec
from bolab.stack import RedisServer
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from service.estimates import Estimator
from tests.helpers import TINY
from tests.inprocess import AppClient

pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]

with open("examples/paper_gamma.json") as _file:
    PAPER_GAMMA = json.load(_file)
BIG = 10**8
COEF = (2.0, 1.5, -0.5, -0.3, 1.0, 0.5, -2.0, 0.1)  # a known steps model the fit must recover


def _cell(**fields: object) -> Cell:
    return JobSpec.model_validate({**TINY, **fields}).cells[0]


def _record(job: str, cell: Cell, steps: list[int], seconds: float, start: float) -> dict:
    runs = [{"steps": s} for s in steps]
    return cell_record(job, {"params": cell.params(), "runs": runs}, seconds, "cpu", 2, start)


def _synthetic(slowness: float = 1.0) -> list[dict]:
    """Records whose steps follow COEF exactly, one batch per cell, each taking `slowness`
    seconds per 1e10 units of its work (`run_parts`, on 2 threads)."""
    records = []
    for k, (n, d_over_n, gn, stop) in enumerate(
        (n, r, g, s)
        for n in (20, 40, 80)
        for r in (1, 2, 4)
        for g in (0, 2, 8)
        for s in ("zero_train_error", "zero_loss")
    ):
        cell = _cell(n=n, d=n * d_over_n, gamma=gn / n, stop=stop, max_steps=10**9)
        steps = round(math.exp(sum(c * f for c, f in zip(COEF, features(cell), strict=True))))
        fixed, step = run_parts(cell, JobSpec.model_validate(TINY), "cpu")
        seconds = slowness * (fixed + steps * step) / 1e10
        records.append(_record(f"j{k}", cell, [steps, steps], seconds, 1000.0 + k))
    return records


def test_fit_recovers_a_known_steps_model() -> None:
    model = fit(_synthetic(), parallel_runs=8, fallback=default_model())
    assert model.coef == pytest.approx(COEF, abs=0.01)
    assert model.cells == 54
    assert "cpu" in model.throughput and model.batches["cpu"] == 54


def test_steps_grow_with_n_fall_with_d_over_n_and_stay_within_max_steps() -> None:
    """As measured on the paper's settings (the shipped default's fit)."""
    model = default_model()
    small, large = (steps_range(_cell(n=n, d=2 * n, gamma=0.02, max_steps=BIG), model)
                    for n in (50, 200))
    assert large[0] > small[0] and large[1] > small[1]
    narrow, wide = (steps_range(_cell(n=100, d=r * 100, gamma=0.05, max_steps=BIG), model)
                    for r in (1, 10))
    assert wide[1] < narrow[1]
    assert steps_range(_cell(n=100, d=200, max_steps=3), model) == pytest.approx((3, 3))


def test_slower_measured_throughput_means_more_seconds() -> None:
    spec = JobSpec.model_validate(PAPER_GAMMA)
    base = default_model()
    slow = EstimateModel(
        coef=base.coef,
        spread=base.spread,
        throughput={"cpu": replace(base.throughput["cpu"], step_units_per_s=1e8)},
        cpus=base.cpus,
    )
    fast_s = estimate(spec, base, parallel_runs=8).seconds["cpu"]
    slow_s = estimate(spec, slow, parallel_runs=8).seconds["cpu"]
    assert fast_s is not None and slow_s is not None
    assert slow_s[0] > 5 * fast_s[0]


def test_cached_runs_are_not_estimated() -> None:
    spec = JobSpec.model_validate(PAPER_GAMMA)
    every = {i: cell.seeds for i, cell in enumerate(spec.cells)}
    found = estimate(spec, default_model(), parallel_runs=8, cached_runs=every)
    assert found.runs_to_train == 0 and found.runs_cached == spec.runs_total
    assert found.gd_steps == (0, 0) and found.seconds["cpu"] == (0.0, 0.0)
    # Half the cells cached: their runs cost nothing, the others as much as before.
    half = {i: cell.seeds for i, cell in enumerate(spec.cells) if i % 2}
    full = estimate(spec, default_model(), parallel_runs=8)
    part = estimate(spec, default_model(), parallel_runs=8, cached_runs=half)
    assert part.runs_to_train == spec.runs_total - sum(half.values())
    assert 0 < part.gd_steps[1] < full.gd_steps[1]


def test_workers_history_is_read_back_and_refits_the_model(redis_server: RedisServer) -> None:
    redis_url = redis_server.url
    store = JobStore.from_url(redis_url)
    store.redis.delete("bolab:cost:history")
    cell = _cell(n=30, d=60)
    row = {"index": 0, **cell.params()}
    store.cell_done("j-hist", "cpu", row, 0.25, [{"steps": 120}, {"steps": 150}])
    (entry,) = store.cost_history()
    assert entry["steps"] == [120, 150] and entry["params"]["n"] == 30
    assert entry["device"] == "cpu" and entry["seconds"] == 0.25

    # A history ten times slower than the default makes the refitted estimate slower.
    base = fit(_synthetic(), 8, default_model()).throughput["cpu"]
    for record in _synthetic(slowness=10.0):
        store.redis.xadd("bolab:cost:history", {"cell": json.dumps(record)})
    refitted = Estimator(Settings(redis_url=redis_url)).model(store)
    slower = refitted.throughput["cpu"]
    assert slower.seconds(1e9, 1e9, 1e3) > 5 * base.seconds(1e9, 1e9, 1e3)
    store.redis.delete("bolab:cost:history")


def test_dry_run_answers_the_estimate_and_stores_nothing(app: AppClient) -> None:
    before = _key_count(app)
    response = app.post("/v1/jobs?dry_run=true", json=PAPER_GAMMA)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["cells"], body["runs"], body["runs_cached"], body["runs_to_train"]) == (
        40, 400, 0, 400
    )
    lo, hi = body["gd_steps"]
    assert 0 < lo <= hi
    cpu = body["seconds"]["cpu"]
    assert 0 < cpu[0] < cpu[1]
    assert body["seconds"]["gpu"] is None  # the default has no GPU data
    assert body["peak_batch_bytes"] > 600 << 20
    assert body["violations"] == []
    assert _key_count(app) == before  # no job, no queue entry


def _key_count(app: AppClient) -> int:
    """Every key in the store's Redis: jobs, their streams, Celery's queues."""
    return app.app.state.store.redis.dbsize()


def test_dry_run_lists_every_violation_as_the_422_names_it(app: AppClient) -> None:
    spec = {"n": 5000, "d": 100_000, "width": 4096, "seeds": 8, "record_every": 1,
            "max_steps": 50_000}  # fmt: skip
    refused = app.post("/v1/jobs", json=spec)
    assert refused.status_code == 422
    detail = json.dumps(refused.json()["detail"])
    response = app.post("/v1/jobs", params={"dry_run": "true"}, json=spec)
    assert response.status_code == 200, response.text
    found = response.json()["violations"]
    for bound in ("max_cost", "max_batch_bytes", "max_stage_work", "max_trajectory_points"):
        assert sum(bound in v for v in found) == 1, (bound, found)
    for violation in found:
        assert violation in detail  # the same words as the submit's 422


def test_dry_run_that_is_not_a_boolean_is_422_naming_it(app: AppClient) -> None:
    response = app.post("/v1/jobs?dry_run=maybe", json=TINY)
    assert response.status_code == 422
    assert any(e["loc"] == ["query", "dry_run"] for e in response.json()["detail"])


def test_dry_run_of_a_spec_too_big_to_expand_is_the_same_422(app: AppClient) -> None:
    """Raw values over a size bound are refused before the grid expands, dry run or not."""
    spec = {**TINY, "seeds": 2000}
    response = app.post("/v1/jobs?dry_run=true", json=spec)
    assert response.status_code == 422
    assert "seeds = 2000 is over the bound max_seeds = 1000" in json.dumps(response.json())


def test_the_default_is_the_fit_of_its_shipped_records() -> None:
    """A deployment's refit starts from the cells the default was fitted on: with no history
    of its own it predicts as the default does."""
    default = default_model()
    refit = fit([], 8, default, prior=default_records())
    assert refit.coef == pytest.approx(default.coef)
    assert refit.throughput == default.throughput
