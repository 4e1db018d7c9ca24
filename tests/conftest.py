"""Real processes for the service suites: a Redis server, a Celery worker and a uvicorn API.

Each runs as a `bolab.stack` process object (start / stop / kill / restart), shared by the whole
session; suites that inject faults (SIGKILL, restarts) can drive the same objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer, WorkerProcess
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from tests.engine_helpers import force_batched_path
from tests.helpers import keyed_api_on_own_redis
from tests.inprocess import AppClient, app_client


@pytest.fixture(params=["compiled_loop", "batched"])
def engine_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways `train_batch` trains on a CPU: Gram-form runs in the compiled loop (what a CPU
    uses), or everything as one batched tensor program (what a GPU uses, forced here)."""
    if request.param == "batched":
        force_batched_path(monkeypatch)
    return request.param


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Runs train two at a time, even where the suite runs torch single-threaded (make test)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def redis_server(lab_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(lab_dir / "redis", log_path=lab_dir / "logs" / "redis.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker_process(redis_server: RedisServer, lab_dir: Path) -> Iterator[WorkerProcess]:
    # Two batches at once, so a long job under test does not hold up the others.
    process = WorkerProcess(
        redis_server.url,
        queues="cpu,gpu",
        concurrency=2,
        pool="prefork",
        log_path=lab_dir / "logs" / "worker.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_server(redis_server: RedisServer, lab_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer(redis_server.url, log_path=lab_dir / "logs" / "api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def lab(api_server: ApiServer, worker_process: WorkerProcess) -> Iterator[LabClient]:
    """A client of the live service, with a worker behind it."""
    assert api_server.alive and worker_process.alive, "a service process died; see its log"
    with LabClient(api_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def app(redis_server: RedisServer) -> Iterator[AppClient]:
    """The API in this process, open (no keys), on the session's Redis; no worker."""
    with app_client(Settings(redis_url=redis_server.url)) as client:
        yield client


@pytest.fixture(scope="session")
def secured_app(redis_server: RedisServer, lab_dir: Path, api_keys: dict) -> Iterator[AppClient]:
    """The API in this process with the keys of `api_keys`, on the session's Redis."""
    settings = Settings(redis_url=redis_server.url, keys_file=lab_dir / "keys")
    with app_client(settings) as client:
        yield client


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[JobStore]:
    jobs = JobStore.from_url(redis_server.url)
    yield jobs
    jobs.redis.close()


@pytest.fixture(scope="session", autouse=True)
def _no_ambient_lab_url() -> None:
    os.environ.pop("BOLAB_URL", None)  # tests name their server explicitly
    os.environ.pop("BOLAB_API_KEY", None)
    os.environ.pop("BOLAB_API_KEYS", None)
    os.environ.pop("BOLAB_KEYS_FILE", None)


@pytest.fixture(scope="session")
def api_keys(lab_dir: Path) -> dict[str, str]:
    """Keys of two users and an admin, in a keys file (hashes only) the secured API reads."""
    from service.auth import entry_line, new_key

    roles = {"alice": "user", "bob": "user", "root": "admin"}
    keys = {owner: new_key() for owner in roles}
    lines = [entry_line(owner, role, keys[owner]) for owner, role in roles.items()]  # type: ignore[arg-type]
    (lab_dir / "keys").write_text("\n".join(lines) + "\n")
    return keys


@pytest.fixture(scope="session")
def secured_api(
    redis_server: RedisServer, worker_process: WorkerProcess, lab_dir: Path, api_keys: dict
) -> Iterator[ApiServer]:
    """A second API on the same Redis and worker, with API keys configured."""
    server = ApiServer(
        redis_server.url,
        env={"BOLAB_KEYS_FILE": str(lab_dir / "keys")},
        log_path=lab_dir / "logs" / "secured-api.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idle_lab(
    tmp_path_factory: pytest.TempPathFactory, lab_dir: Path, api_keys: dict
) -> Iterator[ApiServer]:
    """Its own Redis and a keyed API with small limits, and no worker: jobs stay queued."""
    limits = {"BOLAB_MAX_ACTIVE_JOBS": "3", "BOLAB_MAX_BODY_BYTES": "4096"}
    with keyed_api_on_own_redis(tmp_path_factory.mktemp("idle"), lab_dir / "keys", **limits) as api:
        yield api
