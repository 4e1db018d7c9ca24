"""The run cache end to end: a keyed API, a real worker, two users on one Redis of its own.

- A spec submitted again by another user trains nothing: every run cached, equal run for run
  to the first job's, `source_job` shown only to who may see that job.
- A spec that overlaps half of an earlier job's cells trains only the other half.
- `cache: false` retrains everything; a deleted source job's runs train again, nothing crashes.
- Two overlapping jobs at the same time train their shared runs once.
- A worker killed mid-batch, cache on: nothing lost, no finished cell trained twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from bolab.cli import app
from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer, WorkerProcess
from jobmodel import keys
from tests.helpers import FAST_REAPER, TINY, ended, eventually

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

# Runs that take a few seconds each: tiny steps, zero_loss never reached.
SLOW = {**TINY, "stop": "zero_loss", "lr": 1e-12, "max_margin_baseline": False}


class CacheLab:
    """Its own Redis, a keyed API and a worker with two batch slots on the fast reaper clock."""

    def __init__(self, where: Path, keys_file: Path, api_keys: dict[str, str]) -> None:
        self.where, self.api_keys = where, api_keys
        self.redis = RedisServer(where / "redis", log_path=where / "redis.log")
        self.redis.start()
        env = {"BOLAB_KEYS_FILE": str(keys_file)}
        self.api = ApiServer(self.redis.url, env=env, log_path=where / "api.log")
        self.api.start()
        self.worker = self.new_worker()
        self.worker.start()

    def new_worker(self) -> WorkerProcess:
        return WorkerProcess(
            self.redis.url,
            concurrency=2,
            pool="prefork",
            env=FAST_REAPER,
            log_path=self.where / "worker.log",
        )

    def client(self, owner: str) -> LabClient:
        return LabClient(self.api.url, api_key=self.api_keys[owner], timeout=30)

    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def trained(self) -> int:
        """runs_trained_total, all queues."""
        with self.r() as r:
            raw = r.hgetall(keys.METRIC_COUNTERS)
        return sum(int(v) for k, v in raw.items() if k.startswith("runs_trained_total|"))

    def run(self, owner: str, spec: dict, timeout: float = 180) -> tuple[dict, dict]:
        """Submit as `owner`, wait for the end: (job status, results)."""
        with self.client(owner) as client:
            job_id = client.submit(spec)["id"]
            job = ended(client, job_id, timeout)
            assert job["status"] == "succeeded", job.get("error")
            return job, client.results(job_id)

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cache_lab(
    tmp_path_factory: pytest.TempPathFactory, lab_dir: Path, api_keys: dict[str, str]
) -> Iterator[CacheLab]:
    lab = CacheLab(tmp_path_factory.mktemp("cache"), lab_dir / "keys", api_keys)
    yield lab
    lab.stop()


def runs_of(result: dict) -> list[dict[str, Any]]:
    return [run for cell in result["cells"] for run in cell["runs"]]


def without_source(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("cached", "source_job")}


def test_a_spec_submitted_again_by_another_user_is_served_from_the_cache(
    cache_lab: CacheLab,
) -> None:
    spec = {**TINY, "grid": {"n": [20, 24], "gamma_times_n": [1, 3]}}
    trained_before = cache_lab.trained()
    first, first_result = cache_lab.run("alice", spec)
    second, second_result = cache_lab.run("bob", spec)
    assert cache_lab.trained() - trained_before == 8  # the first job's runs, once
    assert second["progress"]["runs_cached"] == second["progress"]["runs_total"] == 8
    assert first["progress"]["runs_cached"] == 0
    assert [without_source(r) for r in runs_of(second_result)] == [
        without_source(r) for r in runs_of(first_result)
    ]
    assert [c["summary"] for c in second_result["cells"]] == [
        c["summary"] for c in first_result["cells"]
    ]
    assert all(
        r["cached"] is False and r["source_job"] == first["id"] for r in runs_of(first_result)
    )
    # bob may not see alice's job: the source is not named to him; an admin sees it.
    assert all(r["cached"] is True and r["source_job"] is None for r in runs_of(second_result))
    with cache_lab.client("root") as admin:
        as_admin = admin.results(second["id"])
    assert {r["source_job"] for r in runs_of(as_admin)} == {first["id"]}


def test_a_spec_overlapping_half_an_earlier_job_trains_only_the_other_half(
    cache_lab: CacheLab,
) -> None:
    cache_lab.run("alice", {**TINY, "grid": {"n": [30, 32]}})
    trained_before = cache_lab.trained()
    job, result = cache_lab.run("alice", {**TINY, "grid": {"n": [32, 34]}})
    assert cache_lab.trained() - trained_before == 2  # n = 34 only
    assert job["progress"]["runs_cached"] == 2
    cached = [[r["cached"] for r in cell["runs"]] for cell in result["cells"]]
    assert cached == [[True, True], [False, False]]


def test_cache_false_retrains_everything(cache_lab: CacheLab, tmp_path: Path) -> None:
    spec = {**TINY, "n": 36}
    cache_lab.run("alice", spec)
    trained_before = cache_lab.trained()
    job, result = cache_lab.run("alice", {**spec, "cache": False})
    assert cache_lab.trained() - trained_before == 2
    assert job["progress"]["runs_cached"] == 0
    assert not any(r["cached"] for r in runs_of(result))
    # The CLI's --no-cache says the same.
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {"BOLAB_API_KEY": cache_lab.api_keys["alice"]}
    args = ["submit", str(spec_file), "--no-cache", "--url", cache_lab.api.url]
    submitted = CliRunner().invoke(app, args, env=env)
    assert submitted.exit_code == 0, submitted.stderr
    with cache_lab.client("alice") as alice:
        job = ended(alice, submitted.stdout.strip(), 60)
    assert job["spec"]["cache"] is False and job["progress"]["runs_cached"] == 0
    assert cache_lab.trained() - trained_before == 4


def test_runs_of_a_deleted_job_train_again(cache_lab: CacheLab) -> None:
    spec = {**TINY, "n": 38}
    first, _ = cache_lab.run("alice", spec)
    with cache_lab.client("alice") as alice:
        alice.delete(first["id"])
    trained_before = cache_lab.trained()
    job, result = cache_lab.run("bob", spec)
    assert cache_lab.trained() - trained_before == 2
    assert job["progress"]["runs_cached"] == 0
    assert all(r["source_job"] == job["id"] for r in runs_of(result))


def test_overlapping_jobs_at_the_same_time_train_shared_runs_once(cache_lab: CacheLab) -> None:
    spec = {**SLOW, "n": 22, "max_steps": 150_000}
    trained_before = cache_lab.trained()
    with cache_lab.client("alice") as alice, cache_lab.client("bob") as bob:
        first = alice.submit(spec)["id"]
        with cache_lab.r() as r:
            eventually(lambda: r.exists(keys.lease(first, "0")), timeout=60)
        second = bob.submit(spec)["id"]
        jobs = [ended(alice, first, 180), ended(bob, second, 180)]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert cache_lab.trained() - trained_before == 2
    assert jobs[1]["progress"]["runs_cached"] == 2


def test_a_worker_killed_mid_batch_loses_nothing_and_retrains_no_finished_cell(
    cache_lab: CacheLab,
) -> None:
    # One batch (one shape): cell 0 finishes at once, cell 1 trains for seconds.
    spec = {**SLOW, "n": 26, "grid": {"max_steps": [50, 400_000]}}
    trained_before = cache_lab.trained()
    with cache_lab.client("alice") as alice, cache_lab.r() as r:
        job_id = alice.submit(spec)["id"]
        eventually(lambda: r.hexists(keys.cells(job_id), "0"), timeout=60)
        time.sleep(0.3)
        cache_lab.worker.kill()
        cache_lab.worker = cache_lab.new_worker()
        cache_lab.worker.start()
        job = ended(alice, job_id, 180)
        attempts = int(r.hget(keys.attempts(job_id), "0"))
    assert job["status"] == "succeeded", job.get("error")
    assert attempts == 2
    result = alice_results(cache_lab, job_id)
    assert [[r["seed"] for r in c["runs"]] for c in result["cells"]] == [[0, 1], [0, 1]]
    assert not any(r["cached"] for r in runs_of(result))  # this job's own runs
    # Cell 0 once, cell 1 once after the kill (the killed delivery never finished it).
    assert cache_lab.trained() - trained_before == 4
    assert job["progress"]["runs_done"] == 4


def alice_results(lab: CacheLab, job_id: str) -> dict:
    with lab.client("alice") as alice:
        return alice.results(job_id)
