"""MLflow export against a real `mlflow server` (sqlite backend, artifacts in a temp dir), read
back with MLflow's own client: a result file through `bolab export`, a service job through the
automatic export; parent and child runs, params, metrics and artifacts equal bolab's results;
exporting again changes values only (same runs); an API killed mid-export loses no export and
duplicates no run. One server for the module: it takes long to start."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import bo_engine
from bo_engine.results import RUN_METRICS
from bolab.cli import app as cli
from bolab.client import LabClient
from bolab.stack import ApiServer, ManagedProcess, RedisServer, WorkerProcess, free_port
from jobmodel import keys
from jobmodel.store import JobStore
from tests.helpers import TINY, assert_numbers_equal, eventually

pytestmark = pytest.mark.timeout(300)
mlflow = pytest.importorskip("mlflow")
GRID = {**TINY, "grid": {"gamma": [0.0, 0.2]}}
LEASE_S = 2  # BOLAB_MLFLOW_LEASE_S of the APIs under test


class MlflowServer(ManagedProcess):
    name = "mlflow"
    ready_timeout = 240.0  # migrations of a fresh sqlite store, on a busy CI machine

    def __init__(self, where: Path) -> None:
        super().__init__(log_path=where / "mlflow.log")
        self.where, self.port = where, free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.where / 'mlflow.db'}",
            "--artifacts-destination", str(self.where / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200


@dataclass
class Gate:
    """A proxy in front of the MLflow server. Armed, it closes after the `trip_at`-th run is
    made: later requests wait, and once it opens again they are dropped unanswered (their
    client died meanwhile). Records the id of every run made through it."""

    upstream: str
    port: int = 0
    trip_at: int | None = None
    created: list[str] = field(default_factory=list)
    waiting: int = 0
    opened: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve_gate(gate: Gate) -> ThreadingHTTPServer:
    gate.opened.set()

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not gate.opened.is_set():
                gate.waiting += 1
                gate.opened.wait()
                self.close_connection = True
                return  # dropped: never reaches MLflow
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
            answer = httpx.request(
                self.command, gate.upstream + self.path, content=body, headers=headers, timeout=60
            )
            if self.path.endswith("/runs/create") and answer.status_code == 200:
                gate.created.append(answer.json()["run"]["info"]["run_id"])
                if gate.trip_at is not None and len(gate.created) >= gate.trip_at:
                    gate.opened.clear()
            self.send_response(answer.status_code)
            for name in ("Content-Type",):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gate.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start(wait=False)  # ready checked at first use, while the lab starts meanwhile
    yield server
    server.kill()  # the server and its uvicorn child; its store is thrown away


@pytest.fixture(scope="module")
def gate(mlflow_server: MlflowServer) -> Iterator[Gate]:
    gate = Gate(mlflow_server.url)
    server = _serve_gate(gate)
    yield gate
    gate.opened.set()
    server.shutdown()


@dataclass
class ExportLab:
    redis: RedisServer
    worker: WorkerProcess
    api: ApiServer
    store: JobStore
    env: dict[str, str]


@pytest.fixture(scope="module")
def export_lab(tmp_path_factory: pytest.TempPathFactory, gate: Gate) -> Iterator[ExportLab]:
    """Its own Redis, worker and API, with automatic export to the MLflow server (through the
    gate) and a short claim lease."""
    where = tmp_path_factory.mktemp("export-lab")
    env = {
        "BOLAB_MLFLOW_TRACKING_URI": gate.url,
        "BOLAB_MLFLOW_EXPERIMENT": "auto",
        "BOLAB_MLFLOW_LEASE_S": str(LEASE_S),
        "BOLAB_WEBHOOK_POLL_S": "0.1",
        "BOLAB_WEBHOOK_BACKOFF_S": "0.5",
    }
    redis = RedisServer(where / "redis", log_path=where / "redis.log")
    redis.start()
    worker = WorkerProcess(redis.url, env=env, log_path=where / "worker.log")
    api = ApiServer(redis.url, env=env, log_path=where / "api.log")
    worker.start(wait=False)
    api.start()
    worker.wait_ready()
    store = JobStore.from_url(redis.url)
    yield ExportLab(redis, worker, api, store, env)
    store.close()
    api.stop()
    worker.stop()
    redis.stop()


def reader(server: MlflowServer) -> Any:
    server.wait_ready()
    return mlflow.MlflowClient(tracking_uri=server.url)


def param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def runs_of(client: Any, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    return list(client.search_runs([found.experiment_id], max_results=1000)) if found else []


def assert_exported(client: Any, experiment: str, job_id: str, result: dict[str, Any]) -> str:
    """The runs of `job_id` in `experiment` say what `result` says; returns the parent's id."""
    runs = runs_of(client, experiment)
    parents = [r for r in runs if r.data.tags.get("bolab.job_id") == job_id]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["bolab.engine_version"] == result["engine"]["version"]
    assert tags["bolab.numerics_version"] == str(bo_engine.NUMERICS_VERSION)
    params = parent.data.params
    assert params["width"] == "16" and params["n"] == "20" and params["seeds"] == "2"
    assert params["axes"] == "gamma" and "gamma" not in params  # swept: in the children only
    assert params["dtype"] == result["engine"]["dtype"]

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(result["cells"])
    by_index = {int(r.data.tags["bolab.cell_index"]): r for r in children}
    for cell in result["cells"]:
        child = by_index[cell["index"]]
        assert child.data.params == {k: param_text(v) for k, v in cell["params"].items()}
        metrics, summary = child.data.metrics, cell["summary"]
        for name in RUN_METRICS:
            stats = summary[name]
            assert metrics[f"{name}_mean"] == pytest.approx(stats["mean"], rel=1e-12)
            assert metrics[f"{name}_std"] == pytest.approx(stats["std"], rel=1e-12, abs=1e-15)
            if stats["ci95"] is None:  # fewer than two values: no interval, no metric
                assert f"{name}_ci95_lo" not in metrics
                continue
            lo, hi = stats["ci95"]
            assert metrics[f"{name}_ci95_lo"] == pytest.approx(lo, rel=1e-12, abs=1e-15)
            assert metrics[f"{name}_ci95_hi"] == pytest.approx(hi, rel=1e-12, abs=1e-15)
        assert metrics["interpolated_fraction"] == summary["interpolated_fraction"]

    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"result.json", "figure.png"} <= names
    where = client.download_artifacts(parent.info.run_id, "result.json")
    assert_numbers_equal(json.loads(Path(where).read_text()), result)
    png = Path(client.download_artifacts(parent.info.run_id, "figure.png")).read_bytes()
    assert png.startswith(b"\x89PNG")
    return parent.info.run_id


def export_cli(*args: str) -> str:
    done = CliRunner().invoke(cli, ["export", *args])
    assert done.exit_code == 0, done.output
    return done.output


def test_result_file_through_bolab_export(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from bo_engine.runner import run_spec
    from bo_engine.spec import JobSpec

    result = run_spec(JobSpec.model_validate(GRID))
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(result))
    client = reader(mlflow_server)

    export_cli(str(path), "--mlflow", mlflow_server.url, "--experiment", "files")
    parent = assert_exported(client, "files", "sweep", result)
    assert client.get_run(parent).info.run_name == "sweep.json"
    before = {r.info.run_id: r.data.params for r in runs_of(client, "files")}

    # Again, with other numbers: the same runs, the same params, the new values.
    result["cells"][0]["summary"]["test_error"]["mean"] += 0.25
    path.write_text(json.dumps(result))
    export_cli(str(path), "--mlflow", mlflow_server.url, "--experiment", "files")
    assert assert_exported(client, "files", "sweep", result) == parent
    after = {r.info.run_id: r.data.params for r in runs_of(client, "files")}
    assert after == before


def test_export_without_mlflow_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"cells": [], "axes": [], "engine": None}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    done = CliRunner().invoke(cli, ["export", str(path), "--mlflow", "http://127.0.0.1:9"])
    assert done.exit_code == 2
    assert "pip install 'bolab[mlflow]'" in done.output


def test_service_job_exported_automatically(
    export_lab: ExportLab, mlflow_server: MlflowServer
) -> None:
    with LabClient(export_lab.api.url, timeout=30) as lab:
        job_id = lab.submit(GRID)["id"]
        assert lab.wait(job_id, timeout=120)["status"] == "succeeded"
        result = lab.results(job_id)
        client = reader(mlflow_server)
        view = eventually(
            lambda: (job := lab.status(job_id))["mlflow"]["status"] == "exported" and job,
            timeout=120,
        )
        parent = assert_exported(client, "auto", job_id, result)
        assert view["mlflow"] == {"status": "exported", "run_id": parent, "detail": None}
        assert export_lab.store.redis.zscore(keys.MLFLOW_DUE, job_id) is None

        # `bolab export JOB` from the service: the same runs again, no new one.
        count = len(runs_of(client, "auto"))
        export_cli(job_id, "--mlflow", mlflow_server.url, "--experiment", "auto",
                   "--url", export_lab.api.url)  # fmt: skip
        assert assert_exported(client, "auto", job_id, result) == parent
        assert len(runs_of(client, "auto")) == count


def test_api_killed_mid_export_loses_and_duplicates_nothing(
    export_lab: ExportLab, mlflow_server: MlflowServer, gate: Gate
) -> None:
    client = reader(mlflow_server)
    gate.created.clear()
    gate.trip_at = 2  # the parent and the first cell's run are made, then MLflow goes quiet
    with LabClient(export_lab.api.url, timeout=30) as lab:
        job_id = lab.submit(GRID)["id"]
        assert lab.wait(job_id, timeout=120)["status"] == "succeeded"
        result = lab.results(job_id)
    eventually(lambda: gate.waiting, timeout=120)
    assert len(gate.created) == 2
    export_lab.api.kill()  # SIGKILL, mid-export

    gate.trip_at = None
    gate.opened.set()  # the dead process's requests in flight are dropped
    export_lab.api.start()
    with LabClient(export_lab.api.url, timeout=30) as lab:
        view = eventually(
            lambda: (job := lab.status(job_id))["mlflow"]["status"] == "exported" and job,
            timeout=120,
        )
    parent = assert_exported(client, "auto", job_id, result)
    assert parent == gate.created[0] == view["mlflow"]["run_id"]
    # One parent and one run per cell in all: the second export made only the missing one.
    assert len(gate.created) == 1 + len(result["cells"])
    assert export_lab.store.redis.zscore(keys.MLFLOW_DUE, job_id) is None
