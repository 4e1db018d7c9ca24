"""Service benchmark: submit -> result latency of a tiny job, and jobs/s the API accepts, side
by side with a bare FastAPI + pydantic POST app (`bench/bare_app.py`) under the same driver.

    .venv/bin/python bench/service.py [--jobs 20] [--posts 1000] [--clients 16] [--rounds 3]

Starts its own stack (Redis on a free port in a temp dir, the API, one worker) on loopback,
and the bare apps (a plain-function endpoint, which FastAPI runs in its thread pool, and a
coroutine endpoint, as the lab's submit route is) each in one uvicorn process of its own;
prints the figures, and stops everything.
The accept rates use `bench/load.py`'s load driver (a thread per client, each with its own
connection); that benchmark also waits for every job of a bigger load to finish. The two apps
take turns, `--rounds` loads each, and each shows its best round: on a shared machine the
other load comes and goes, and the best round is the one it disturbed least. The CPU time the
server process used per POST (from /proc: Linux) varies far less with that other load than
the rates do; the API's excludes its Redis's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import httpx

from bolab.client import LabClient
from bolab.stack import Stack, free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from load import Load, submit_load  # noqa: E402

TINY = {"n": 20, "d": 40, "width": 16, "n_test": 200, "max_steps": 2000, "seeds": 2}


def latency(client: LabClient, jobs: int) -> tuple[list[float], list[float]]:
    """Seconds from POST to having the full result JSON, one job at a time; and engine seconds
    (training in the worker), so the service's own share shows."""
    seconds, engine = [], []
    for seed in range(jobs):
        started = time.perf_counter()
        job_id = client.submit({**TINY, "seed": seed})["id"]
        job = client.wait(job_id, timeout=60, max_interval=0.01)
        assert job["status"] == "succeeded", job
        result = client.results(job_id)
        seconds.append(time.perf_counter() - started)
        engine.append(result["engine"]["wall_seconds"])
    return seconds, engine


@dataclass
class Server:
    url: str
    pid: int


@dataclass
class Measured:
    load: Load
    cpu_ms: float  # CPU time of the server process per POST


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: Server, posts: int, clients: int) -> Measured:
    before = cpu_seconds(server.pid)
    load = submit_load(server.url, posts, clients, TINY)
    return Measured(load, (cpu_seconds(server.pid) - before) * 1e3 / posts)


@contextmanager
def bare_app(name: str) -> Iterator[Server]:
    """The bare app `bare_app:<name>` in one uvicorn process on loopback."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"bare_app:{name}", "--app-dir", str(HERE),
            "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(argv)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/docs", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield Server(url, process.pid)
    finally:
        process.terminate()
        process.wait(10)


def rounds(servers: list[Server], posts: int, clients: int, n: int) -> list[Measured]:
    """The best of `n` loads on each app, the apps taking turns (after a warm-up each)."""
    runs: list[list[Measured]] = [[] for _ in servers]
    for server in servers:
        submit_load(server.url, clients * 4, clients, TINY)
    for _ in range(n):
        for server, done in zip(servers, runs, strict=True):
            done.append(measure(server, posts, clients))
    return [max(done, key=attrgetter("load.rate")) for done in runs]


def _rate(name: str, run: Measured) -> str:
    load = run.load
    p50, p99 = load.percentile(0.5) * 1e3, load.percentile(0.99) * 1e3
    return f"{name:<18} {load.rate:>8.0f} {p50:>9.1f} {p99:>9.1f} {run.cpu_ms:>12.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # The loads queue every job at once (and the warm-ups some more).
    env = {"BOLAB_MAX_ACTIVE_JOBS": str((args.rounds + 1) * args.posts)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), log_dir=Path(tmp) / "logs", env=env) as lab,
    ):
        with LabClient(lab.api.url) as client:
            latency(client, 2)  # warm-up: first imports, first connections
            seconds, engine = latency(client, args.jobs)
        # The accept rates measure the API alone: no worker takes CPU from it meanwhile.
        lab.worker.stop()
        assert lab.api.proc is not None
        api = Server(lab.api.url, lab.api.proc.pid)
        with bare_app("app") as bare_server, bare_app("async_app") as bare_async_server:
            servers = [bare_server, bare_async_server, api]
            bare, bare_async, load = rounds(servers, args.posts, args.clients, args.rounds)
    print(f"tiny job {TINY}")
    ms = sorted(s * 1e3 for s in seconds)
    print(
        f"submit -> result latency over {args.jobs} jobs: median {statistics.median(ms):.0f} ms "
        f"(min {ms[0]:.0f}, max {ms[-1]:.0f}); training in the worker: median "
        f"{statistics.median(engine) * 1e3:.0f} ms"
    )
    print(
        f"{args.posts} POSTs from {args.clients} clients, one API process each, best of "
        f"{args.rounds} rounds taken in turns:"
    )
    print(f"{'':<18} {'POSTs/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'CPU ms/POST':>12}")
    print(_rate("bare FastAPI", bare))
    print(_rate("bare FastAPI async", bare_async))
    print(_rate("POST /v1/jobs", load))
    for name, yardstick in (("bare", bare), ("bare async", bare_async)):
        print(
            f"submit / {name}: rate {load.load.rate / yardstick.load.rate:.2f}, "
            f"p99 {load.load.percentile(0.99) / yardstick.load.percentile(0.99):.2f}, "
            f"CPU per POST {load.cpu_ms / yardstick.cpu_ms:.2f}"
        )


if __name__ == "__main__":
    main()
