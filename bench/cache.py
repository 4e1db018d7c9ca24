"""Run cache benchmark: the same spec submitted twice, by two users, on a lab of its own.

    .venv/bin/python bench/cache.py [--spec examples/paper_gamma.json] [--concurrency 2]

Starts a Redis, a keyed API and a worker (temp dir, free ports), submits the spec as user
alice, waits, submits it again as user bob, waits, and prints both jobs' wall times (submit to
succeeded), the second's runs_cached, whether every run equals the first job's (all fields but
`cached` and `source_job`), and the bytes the cache's pointers take in Redis (MEMORY USAGE)
against the bytes of the results they point at.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer, WorkerProcess
from jobmodel import keys


def timed_job(client: LabClient, spec: dict) -> tuple[dict, float]:
    started = time.perf_counter()
    job_id = client.submit(spec)["id"]
    job = client.wait(job_id)
    return client.status(job_id) | {"status": job["status"]}, time.perf_counter() - started


def add_key(user: str, keys_file: Path) -> str:
    """`bolab keys add` (this script's folder shadows the `service` package for imports)."""
    bolab = Path(sys.executable).with_name("bolab")
    args = [str(bolab), "keys", "add", user, "--file", str(keys_file)]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def same_runs(a: dict, b: dict) -> bool:
    def runs(result: dict) -> list[dict]:
        return [
            {k: v for k, v in run.items() if k not in ("cached", "source_job")}
            for cell in result["cells"]
            for run in cell["runs"]
        ]

    return runs(a) == runs(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=Path("examples/paper_gamma.json"))
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    where = Path(tempfile.mkdtemp(prefix="bolab-cache-bench-"))
    users = {user: add_key(user, where / "keys") for user in ("alice", "bob")}
    server = RedisServer(where / "redis", log_path=where / "redis.log")
    server.start()
    api = ApiServer(server.url, env={"BOLAB_KEYS_FILE": str(where / "keys")})
    worker = WorkerProcess(server.url, concurrency=args.concurrency, pool="prefork")
    try:
        api.start()
        worker.start()
        with (
            LabClient(api.url, api_key=users["alice"], timeout=60) as alice,
            LabClient(api.url, api_key=users["bob"], timeout=60) as bob,
        ):
            first, first_s = timed_job(alice, spec)
            second, second_s = timed_job(bob, spec)
            same = same_runs(alice.results(first["id"]), bob.results(second["id"]))
        r = redis.Redis.from_url(server.url)
        pointers = r.memory_usage(keys.run_cache("lab"), samples=0) or 0
        results = r.memory_usage(keys.cells(first["id"]), samples=0) or 0
        runs = first["progress"]["runs_total"]
        print(f"spec {args.spec}: {runs} runs, worker concurrency {args.concurrency}")
        print(f"first job  (alice): {first['status']}, {first_s:8.2f} s")
        print(
            f"second job (bob):   {second['status']}, {second_s:8.2f} s, "
            f"runs_cached {second['progress'].get('runs_cached')}/{runs}, "
            f"{second_s / first_s:.3%} of the first"
        )
        print(f"runs equal run for run (but cached, source_job): {same}")
        print(
            f"Redis: cache pointers {pointers} bytes ({pointers / runs:.0f} per run); "
            f"the first job's cells {results} bytes ({results / runs:.0f} per run)"
        )
    finally:
        worker.stop()
        api.stop()
        server.stop()


if __name__ == "__main__":
    main()
