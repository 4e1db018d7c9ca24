"""The run cache against a real Redis, in process: pointers, what they serve and never serve,
claims, deletion, memory per run, and admission charging only the runs to train."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import bo_engine
from bo_engine.adaptive import runs_bound
from bo_engine.plan import Batch
from bo_engine.rounds import RoundPlan, RoundRequest, round_spec
from bo_engine.runcache import run_refs, served, stored
from bo_engine.spec import JobSpec
from jobmodel.runcache import RunCache, cached_per_cell, count_cached
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from tests.helpers import TINY
from tests.inprocess import AppClient, app_client
from tests.test_adaptive import ADAPTIVE

pytestmark = pytest.mark.fast
SPEC = {**TINY, "device": "cpu", "grid": {"n": [20, 24]}}


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    """SPEC's result, trained here once."""
    from bo_engine.runner import run_spec

    return run_spec(JobSpec.model_validate(SPEC))


def finish_job(store: JobStore, spec: dict, result: dict, owner: str = "alice") -> str:
    """A succeeded job of `owner` holding `result`'s cells, its runs pointed at by the cache
    of the lab scope, as a worker leaves them."""
    parsed = JobSpec.model_validate(spec)
    job = store.create(spec, runs_total=parsed.runs_total, cells_total=2, queue="cpu", owner=owner)
    cache = RunCache(store.redis, "lab")
    key_of = {r.slot: r.key for r in run_refs(parsed, range(len(parsed.cells)), "cpu")}
    for cell in result["cells"]:
        runs = [{**run, "source_job": job.id} for run in cell["runs"]]
        store.put_cell(job.id, {**cell, "runs": runs}, {"index": cell["index"]})
        cache.remember(job.id, cell["index"], [key_of[(cell["index"], r["seed"])] for r in runs])
    store.mark_succeeded(job.id, {})
    return job.id


@pytest.fixture
def fresh(store: JobStore) -> JobStore:
    store.redis.delete("bolab:runs:lab")
    return store


def refs_for(spec: dict, device: str = "cpu") -> list:
    parsed = JobSpec.model_validate(spec)
    return run_refs(parsed, range(len(parsed.cells)), device)


def test_a_stored_run_is_served_as_it_was_trained(fresh: JobStore, trained: dict) -> None:
    job_id = finish_job(fresh, SPEC, trained)
    found = RunCache(fresh.redis, "lab").lookup(refs_for(SPEC))
    assert len(found) == 4
    parsed = JobSpec.model_validate(SPEC)
    originals = {(c["index"], r["seed"]): r for c in trained["cells"] for r in c["runs"]}
    for ref in refs_for(SPEC):
        run, source = found[ref.key]
        assert source == job_id
        again = served(run, parsed.cells[ref.cell_index], parsed, source)
        assert stored(again) == stored(originals[ref.slot])  # only cached/source_job differ
        assert again["cached"] is True and again["source_job"] == job_id


@pytest.mark.parametrize(
    "other",
    [{"dtype": "float64"}, {"record_every": 100}, {"max_margin_baseline": False}, {"n_test": 201}],
)
def test_a_run_is_never_served_to_a_job_that_differs(
    fresh: JobStore, trained: dict, other: dict
) -> None:
    finish_job(fresh, SPEC, trained)
    assert RunCache(fresh.redis, "lab").lookup(refs_for({**SPEC, **other})) == {}


def test_a_run_is_never_served_on_another_training_path(fresh: JobStore, trained: dict) -> None:
    finish_job(fresh, SPEC, trained)
    assert RunCache(fresh.redis, "lab").lookup(refs_for(SPEC, "cuda")) == {}


def test_a_run_is_never_served_under_another_numerics_version(
    fresh: JobStore, trained: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_job(fresh, SPEC, trained)
    monkeypatch.setattr(bo_engine, "NUMERICS_VERSION", bo_engine.NUMERICS_VERSION + 1)
    assert RunCache(fresh.redis, "lab").lookup(refs_for(SPEC)) == {}


def test_a_deleted_jobs_runs_miss_and_their_pointers_go(fresh: JobStore, trained: dict) -> None:
    job_id = finish_job(fresh, SPEC, trained)
    fresh.redis.hset("bolab:runs:lab", "f" * 64, "another 0")  # another job's run stays
    assert fresh.delete(job_id) == "deleted"
    assert fresh.redis.hkeys("bolab:runs:lab") == ["f" * 64]  # its pointers went with it
    cache = RunCache(fresh.redis, "lab")
    assert cache.lookup(refs_for(SPEC)) == {}


def test_deleting_an_adaptive_job_drops_the_pointers_of_its_rounds_cells(fresh: JobStore) -> None:
    """A cell an adaptive job planned in a round is not among its spec's cells: its runs'
    pointers go with the job all the same, for both scopes and device kinds."""
    spec = JobSpec.model_validate(ADAPTIVE)
    job = fresh.create(
        ADAPTIVE, runs_total=runs_bound(spec), cells_total=0, queue="cpu", adaptive=True
    )
    request = RoundRequest(index=5, point={"n": 20, "d_over_n": 2, "gamma": 0.05}, seed=0, seeds=3)
    plan = RoundPlan(0, (request,), (Batch(0, (5,), 3),))
    assert fresh.store_round(job.id, plan.to_json(), 0, {"round": 0})
    view = round_spec(spec, plan.requests)
    cache = RunCache(fresh.redis, "lab")
    for device in ("cpu", "cuda"):
        cache.remember(job.id, 5, [r.key for r in run_refs(view, [5], device)])
    fresh.redis.hset("bolab:runs:lab", "f" * 64, "another 0")  # another job's run stays
    fresh.mark_succeeded(job.id, {})
    assert fresh.delete(job.id) == "deleted"
    assert fresh.redis.hkeys("bolab:runs:lab") == ["f" * 64]


def test_a_pointer_to_a_job_gone_otherwise_misses_and_is_dropped(
    fresh: JobStore, trained: dict
) -> None:
    job_id = finish_job(fresh, SPEC, trained)
    fresh.redis.delete(f"bolab:job:{job_id}:cells")  # gone without DELETE (a flushed key)
    cache = RunCache(fresh.redis, "lab")
    assert cache.lookup(refs_for(SPEC)) == {}
    # Dropped at that lookup (other jobs of the session's lab may point at runs of their own).
    assert fresh.redis.hmget("bolab:runs:lab", [r.key for r in refs_for(SPEC)]) == [None] * 4


def test_owner_scope_and_off(fresh: JobStore, trained: dict) -> None:
    finish_job(fresh, SPEC, trained)
    spec = JobSpec.model_validate(SPEC)
    assert count_cached(fresh.redis, spec, "bob", Settings(cache_scope="lab")) == 4
    assert count_cached(fresh.redis, spec, "bob", Settings(cache_scope="owner")) == 0
    assert count_cached(fresh.redis, spec, "alice", Settings(cache_scope="off")) == 0
    uncached = JobSpec.model_validate({**SPEC, "cache": False})
    assert count_cached(fresh.redis, uncached, "bob", Settings()) == 0
    half = JobSpec.model_validate({**SPEC, "grid": {"n": [24, 28]}})
    assert cached_per_cell(fresh.redis, half, "bob", Settings()) == {0: 2}


def test_a_claim_holds_while_its_holders_lease_lives(store: JobStore) -> None:
    refs = refs_for({**SPEC, "seed": 7000})
    cache = RunCache(store.redis, "lab")
    store.redis.set("bolab:job:a:lease:0", "token")
    mine, theirs = cache.claim(refs, "bolab:job:a:lease:0", 60)
    assert (len(mine), theirs) == (4, [])
    assert cache.claim(refs, "bolab:job:b:lease:0", 60) == ([], refs)  # a lives: wait
    assert cache.claim(refs, "bolab:job:a:lease:0", 60) == (refs, [])  # a redelivery: its own
    store.redis.delete("bolab:job:a:lease:0")  # a's worker died: its lease lapsed
    assert cache.claim(refs, "bolab:job:b:lease:0", 60) == (refs, [])
    cache.release(refs, "bolab:job:b:lease:0")
    assert not any(store.redis.exists(f"bolab:runclaim:lab:{r.key}") for r in refs)


def test_a_cached_run_costs_a_pointer_not_a_copy(fresh: JobStore, trained: dict) -> None:
    """MEMORY USAGE per run: the cache's pointer against the run as its job stores it. The
    pointer hash is filled to a lab's size (thousands of runs: Redis's hashtable encoding)."""
    client: redis.Redis = fresh.redis
    job_id = finish_job(fresh, SPEC, trained)
    run_bytes = client.memory_usage(f"bolab:job:{job_id}:cells", samples=0) / 4
    runs = 5000
    RunCache(client, "lab").remember(job_id, 0, [f"{i:064x}" for i in range(runs)])
    per_run = client.memory_usage("bolab:runs:lab", samples=0) / runs
    print(f"run cache: {per_run:.0f} bytes per run; the run itself: {run_bytes:.0f} bytes")
    client.delete("bolab:runs:lab")
    assert per_run < 200 and per_run < run_bytes / 4


def test_admission_charges_only_the_runs_to_train(redis_server: Any, trained: dict) -> None:
    """A job over BOLAB_MAX_COST on all of its runs is accepted when the cache holds enough of
    them, and refused naming the bound when it does not."""
    settings = Settings(redis_url=redis_server.url, max_cost=1e9)  # SPEC: 1.4e9, one cell 0.2e9
    store = JobStore.from_url(redis_server.url)
    store.redis.delete("bolab:runs:lab")
    with app_client(settings) as app:
        assert_refused(app, SPEC)
        finish_job(store, SPEC, trained, owner="")
        accepted = app.post("/v1/jobs", json={**SPEC, "device": "cuda"})  # another path: none
        assert accepted.status_code == 422
        assert app.post("/v1/jobs", json=SPEC).status_code == 202, "all cached: nothing to pay"
        assert_refused(app, {**SPEC, "cache": False})
    store.close()


def test_a_dry_run_counts_the_runs_the_cache_holds(redis_server: Any, trained: dict) -> None:
    """The dry run reads the cache: a job whose runs are all cached has nothing to train and
    costs nothing; one with a new cell trains that cell's runs only."""
    store = JobStore.from_url(redis_server.url)
    store.redis.delete("bolab:runs:lab")
    with app_client(Settings(redis_url=redis_server.url)) as app:
        finish_job(store, SPEC, trained, owner="")
        again = app.post("/v1/jobs?dry_run=true", json=SPEC).json()
        assert (again["runs_cached"], again["runs_to_train"]) == (again["runs"], 0)
        assert again["gd_steps"] == [0, 0] and again["seconds"]["cpu"] == [0.0, 0.0]
        wider = {**SPEC, "grid": {"n": [20, 24, 28]}}
        more = app.post("/v1/jobs?dry_run=true", json=wider).json()
        seeds = JobSpec.model_validate(SPEC).cells[0].seeds
        assert (more["runs_cached"], more["runs_to_train"]) == (again["runs"], seeds)
        assert more["seconds"]["cpu"][1] > 0
    store.close()


def assert_refused(app: AppClient, spec: dict) -> None:
    response = app.post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert "max_cost" in response.text and "estimated work" in response.text


@pytest.mark.parametrize("bad", ["maybe", 2, [True], {"on": True}])
def test_a_bad_cache_field_is_422_naming_it(app: AppClient, bad: Any) -> None:
    response = app.post("/v1/jobs", json={**TINY, "cache": bad})
    assert response.status_code == 422
    assert ["body", "cache"] in [e["loc"] for e in response.json()["detail"]]
    assert app.post("/v1/jobs", json={**TINY, "cache": False}).status_code == 202


def test_runs_cached_are_counted_for_prometheus(app: AppClient, store: JobStore) -> None:
    def cached_total() -> float:
        for line in app.get("/metrics").text.splitlines():
            if line.startswith('bolab_runs_cached_total{queue="cpu"}'):
                return float(line.split()[-1])
        return 0.0

    before = cached_total()
    store.count("runs_cached_total", {"queue": "cpu"}, 3)
    assert cached_total() == before + 3
