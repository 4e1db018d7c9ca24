"""An adaptive job's round bookkeeping, in process against a real Redis: cell indices as the
local run assigns them, a round stored once and in turn, planning steps that do nothing when
duplicated, early or cancelled, the job closed only by an empty round, and the API admitting
adaptive specs by their budget."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bo_engine.adaptive import add_runs, merged_cell, plan_round, runs_bound
from bo_engine.cost import job_cost
from bo_engine.rounds import RoundPlan, budget_spec, plan_next_round
from bo_engine.spec import JobSpec
from jobmodel import keys
from jobmodel.queue import RUN_BATCH
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from service.limits import over_max_cost, violations
from tests.helpers import TINY
from tests.inprocess import AppClient
from tests.test_adaptive import ADAPTIVE, SEARCH, _synthetic_runs
from worker import rounds

pytestmark = pytest.mark.fast

CROSSING = 0.03


def _runs(spec: JobSpec, request: Any) -> list[dict[str, Any]]:
    seeds = range(request.seed, request.seed + request.seeds)
    return _synthetic_runs(request.point, seeds, 7, CROSSING)


def test_cell_indices_are_the_local_runs() -> None:
    """Planning round by round with `plan_next_round` (indices assigned at planning) gives the
    cells `add_runs` gives locally, index for index; batches number on across rounds."""
    spec = JobSpec.model_validate(SEARCH)
    local: list[dict] = []
    while requests := plan_round(spec, local):
        for r in requests:
            seeds = range(r.cell.seed, r.cell.seed + r.cell.seeds)
            local = add_runs(spec, local, r, _synthetic_runs(r.point, seeds, 7, CROSSING))
    served: dict[int, dict] = {}
    first, k = 0, 0
    while (plan := plan_next_round(spec, list(served.values()), k, first)).requests:
        assert plan.first_batch == first and RoundPlan.from_json(plan.to_json()) == plan
        extends = [r for r in plan.requests if r.index in served]
        assert all(served[r.index]["point"] == r.point for r in extends)
        assert {r.index for r in plan.requests if r.index not in served} == set(
            range(len(served), len(served) + len(plan.requests) - len(extends))
        )
        for r in plan.requests:
            served[r.index] = merged_cell(
                spec, served.get(r.index), r.point, r.index, _runs(spec, r)
            )
        first, k = first + len(plan.batches), k + 1
    assert sorted(served.values(), key=lambda c: c["index"]) == local and k > 3


def _job(store: JobStore, spec: dict) -> str:
    parsed = JobSpec.model_validate(spec)
    return store.create(
        spec, runs_total=runs_bound(parsed), cells_total=12, queue="cpu", adaptive=True
    ).id


def _finish_round(store: JobStore, job_id: str, spec: JobSpec, plan: RoundPlan) -> None:
    """What the round's batches leave: each cell with its runs, each batch done."""
    for r in plan.requests:
        cell = merged_cell(spec, store.cell(job_id, r.index), r.point, r.index, _runs(spec, r))
        store.put_cell(job_id, cell, {})
    for batch in plan.batches:
        store.finish_batch(job_id, batch.index, batch.runs, 0.01)


class Sent(list):
    def __call__(self, task: str, args: list[Any], queue: str) -> None:
        self.append((task, args))


def test_planning_steps_are_idempotent_by_round(store: JobStore) -> None:
    spec = JobSpec.model_validate(ADAPTIVE)
    job_id = _job(store, ADAPTIVE)
    sent = Sent()
    rounds.plan(store, store.get(job_id), spec, 0, sent)
    (stored,) = store.rounds(job_id)
    plan = RoundPlan.from_json(stored)
    assert sent == [(RUN_BATCH, [job_id, b.index]) for b in plan.batches] and sent
    record = store.get(job_id)
    assert record.round == 0 and record.batches_total == len(plan.batches)
    rounds.plan(store, store.get(job_id), spec, 0, sent)  # a duplicate of round 0's step
    rounds.plan(store, store.get(job_id), spec, 1, sent)  # early: round 0 still trains
    rounds.plan(store, store.get(job_id), spec, 2, sent)  # out of turn
    assert len(store.rounds(job_id)) == 1 and len(sent) == len(plan.batches)
    events = store.redis.xrange(keys.events(job_id))
    assert [json.loads(e["data"])["round"] for _, e in events if e["event"] == "round"] == [0]

    _finish_round(store, job_id, spec, plan)
    assert not store.close_if_done(job_id)  # every batch done, but the planner is not
    rounds.plan(store, store.get(job_id), spec, 1, sent)
    second = RoundPlan.from_json(store.rounds(job_id)[1])
    assert second.first_batch == len(plan.batches)
    assert store.get(job_id).batches_total == len(plan.batches) + len(second.batches)


def test_a_round_is_stored_once_and_in_turn(store: JobStore) -> None:
    job_id = _job(store, ADAPTIVE)
    event = {"round": 0}
    plan = {"round": 0, "requests": [{"index": 0}], "batches": [[0]], "first_batch": 0}
    assert store.store_round(job_id, plan, 0, event)
    assert not store.store_round(job_id, plan, 0, event)  # a duplicate
    late = {**plan, "round": 1, "first_batch": 1}
    assert not store.store_round(job_id, late, 0, event)  # batches so far are 1, not 0
    assert not store.store_round(job_id, {**late, "round": 2}, 1, event)  # round 1 missing
    assert store.store_round(job_id, late, 1, event)
    assert store.get(job_id).batches_total == 2


def test_cancel_between_rounds_plans_nothing(store: JobStore) -> None:
    spec = JobSpec.model_validate(ADAPTIVE)
    job_id = _job(store, ADAPTIVE)
    rounds.plan(store, store.get(job_id), spec, 0, Sent())
    _finish_round(store, job_id, spec, RoundPlan.from_json(store.rounds(job_id)[0]))
    store.cancel(job_id)
    sent = Sent()
    rounds.plan(store, store.get(job_id), spec, 1, sent)
    assert sent == [] and len(store.rounds(job_id)) == 1
    assert store.get(job_id).status == "cancelled"


def test_an_empty_round_closes_the_job(store: JobStore) -> None:
    """Seeds to a target on one cell whose runs all agree: round 1 asks for nothing, and the
    job closes succeeded."""
    spec_json = {**TINY, "seeds": {"min": 3, "max": 9, "target": {"ci95_halfwidth": 0.05}}}
    spec = JobSpec.model_validate(spec_json)
    job_id = _job(store, spec_json)
    rounds.plan(store, store.get(job_id), spec, 0, Sent())
    (request,) = RoundPlan.from_json(store.rounds(job_id)[0]).requests
    runs = [{"seed": s, "test_error": 0.1, "interpolated": True} for s in range(3)]
    store.put_cell(job_id, merged_cell(spec, None, request.point, 0, runs), {})
    store.finish_batch(job_id, 0, 3, 0.01)
    sent = Sent()
    rounds.plan(store, store.get(job_id), spec, 1, sent)
    assert sent == [] and store.get(job_id).status == "succeeded"
    assert store.get(job_id).rounds_done


def test_the_api_takes_adaptive_specs_priced_by_their_budget(app: AppClient) -> None:
    spec = JobSpec.model_validate(ADAPTIVE)
    dry = app.post("/v1/jobs?dry_run=true", json=ADAPTIVE)
    assert dry.status_code == 200, dry.text
    assert dry.json()["runs"] == runs_bound(spec) == budget_spec(spec).runs_total
    accepted = app.post("/v1/jobs", json=ADAPTIVE)
    assert accepted.status_code == 202, accepted.text
    job = app.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert job["progress"]["runs_total"] == job["progress"]["runs_bound"] == runs_bound(spec)
    assert job["progress"]["round"] is None  # no round planned yet (no worker here)
    app.post(f"/v1/jobs/{accepted.json()['id']}/cancel")


def test_admission_prices_an_adaptive_job_by_its_budget() -> None:
    """A max_cost between the work of the range ends alone (`spec.cells`) and the budget's
    (lines x max_cells_per_line x max seeds) refuses the job, naming the bound."""
    spec = JobSpec.model_validate(ADAPTIVE)
    ends = job_cost(spec, parallel_runs=1).work
    budget = job_cost(budget_spec(spec), parallel_runs=1).work  # type: ignore[arg-type]
    assert budget > 3 * ends
    settings = Settings(max_cost=(ends + budget) / 2, max_parallel_runs=1)
    (problem,) = violations(spec, settings)
    assert "max_cost" in problem
    assert over_max_cost(spec, settings)


def test_local_dry_run_estimates_the_budget() -> None:
    from bolab.local_cli import local_estimate

    spec = JobSpec.model_validate(ADAPTIVE)
    found = local_estimate(spec)
    assert found["runs"] == runs_bound(spec) and found["cells"] == 2 * 8
