"""`bolab up`: one command brings up Redis, the API and a worker; Ctrl-C stops all three."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from bolab.client import LabClient
from bolab.stack import BOLAB, free_port, port_free
from tests.helpers import TINY, eventually

pytestmark = pytest.mark.timeout(120)


def _running(marker: str) -> bool:
    """Is any process's command line carrying `marker` (the worker's unique node name)?"""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


@contextmanager
def bolab_up(
    api_port: int, redis_port: int, data: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """`bolab up` with its output in `log`; Ctrl-C on leaving if it still runs, then a kill if
    it does not stop within a minute."""
    with log.open("wb") as sink:
        up = subprocess.Popen(
            [*BOLAB, "up", "--port", str(api_port), "--redis-port", str(redis_port),
             "--data-dir", str(data)],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        yield up
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        finally:
            if up.poll() is None:
                up.kill()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_up_runs_a_job_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    api_port, redis_port = free_port(), free_port()
    log = tmp_path / "up.log"
    with bolab_up(api_port, redis_port, tmp_path / "data", log) as up:
        url = f"http://127.0.0.1:{api_port}"
        eventually(lambda: _ready(url), timeout=90, every=0.2)
        with LabClient(url) as lab:
            job_id = lab.submit(TINY)["id"]
            assert lab.wait(job_id, timeout=60)["status"] == "succeeded"
        worker = re.search(r"worker (\S+@\S+)", log.read_text())
        assert worker, log.read_text()
        assert _running(worker.group(1))

        up.send_signal(stop_signal)
        assert up.wait(timeout=60) == 0, log.read_text()
    assert "stopped." in log.read_text()
    assert port_free(api_port) and port_free(redis_port)
    assert not _running(worker.group(1))
    # Redis kept an append-only file in the data directory (6.x: a file, 7.x: a directory).
    assert list((tmp_path / "data" / "redis").glob("appendonly*"))


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_picks_up_keys_added_while_it_runs(tmp_path: Path) -> None:
    api_port, data = free_port(), tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("BOLAB_KEYS_FILE", "BOLAB_API_KEYS")}
    log = tmp_path / "up.log"
    with bolab_up(api_port, free_port(), data, log, env):
        url = f"http://127.0.0.1:{api_port}"
        eventually(lambda: _ready(url), timeout=90, every=0.2)
        assert "no API keys configured" in log.read_text().replace("\n", " ")
        assert httpx.get(f"{url}/v1/jobs").status_code == 200  # open on loopback, as warned
        added = subprocess.run(
            [*BOLAB, "keys", "add", "gus", "--file", str(data / "keys")],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        key = added.stdout.strip()
        assert eventually(lambda: httpx.get(f"{url}/v1/jobs").status_code == 401, timeout=5)
        assert httpx.get(f"{url}/v1/jobs", headers={"X-API-Key": key}).status_code == 200


def test_up_locks_its_redis(tmp_path: Path) -> None:
    """`bolab up`'s Redis wants the password from its 0600 file, and is capped at
    BOLAB_REDIS_MAXMEMORY; API and worker get the password, the terminal only a masked URL."""
    api_port, redis_port, data = free_port(), free_port(), tmp_path / "data"
    log = tmp_path / "up.log"
    env = {**os.environ, "BOLAB_REDIS_MAXMEMORY": "256mb"}
    with bolab_up(api_port, redis_port, data, log, env):
        url = f"http://127.0.0.1:{api_port}"
        eventually(lambda: _ready(url), timeout=90, every=0.2)  # API and worker reach Redis
        password_file = data / "redis" / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        shown = log.read_text()
        assert password not in shown and f"redis://:**@127.0.0.1:{redis_port}/0" in shown, shown
        with redis.Redis(port=redis_port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with redis.Redis(port=redis_port, password=password, decode_responses=True) as client:
            assert client.config_get("maxmemory")["maxmemory"] == str(256 << 20)
    for private in (data, data / "redis"):
        assert private.stat().st_mode & 0o777 == 0o700, private
