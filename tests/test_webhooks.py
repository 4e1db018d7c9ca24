"""Webhooks against a real HTTP receiver on 127.0.0.1: the signature verifies, 500s are retried
with growing delays up to the cap, and only allow-listed hosts are accepted (422 otherwise)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bolab.client import LabClient, LabError
from bolab.stack import ApiServer, RedisServer, WorkerProcess
from tests.helpers import TINY, eventually
from worker import keys
from worker.store import JobStore

pytestmark = pytest.mark.timeout(120)
SECRET = "test-webhook-secret"
ATTEMPTS = 3
BACKOFF = 0.3


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers each path with its scripted statuses in turn (200 once the script runs out)."""

    port: int
    script: dict[str, list[int]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's spelling)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.calls.append(Call(self.path, dict(self.headers), body, time.monotonic()))
            todo = state.script.get(self.path) or [200]
            status = todo.pop(0) if len(todo) > 1 or self.path not in state.script else todo[0]
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()


@pytest.fixture(scope="module")
def hooked_api(
    redis_server: RedisServer, worker_process: WorkerProcess, lab_dir: Path
) -> Iterator[ApiServer]:
    """An API with webhooks on (secret, allow-list of 127.0.0.1, quick retries)."""
    env = {
        "BOLAB_WEBHOOK_SECRET": SECRET,
        "BOLAB_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,*.lab.example",
        "BOLAB_WEBHOOK_MAX_ATTEMPTS": str(ATTEMPTS),
        "BOLAB_WEBHOOK_BACKOFF_S": str(BACKOFF),
        "BOLAB_WEBHOOK_POLL_S": "0.05",
    }
    server = ApiServer(redis_server.url, env=env, log_path=lab_dir / "logs" / "hooked-api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hooked(hooked_api: ApiServer) -> Iterator[LabClient]:
    with LabClient(hooked_api.url) as client:
        yield client


def test_signed_summary_on_success_and_cancel(hooked: LabClient, receiver: Receiver) -> None:
    job_id = hooked.submit(TINY, notify_url=receiver.url("/done"))["id"]
    assert hooked.wait(job_id, timeout=60)["status"] == "succeeded"
    call = eventually(lambda: receiver.to("/done"), timeout=15)[0]

    expected = "sha256=" + hmac.new(SECRET.encode(), call.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(call.headers["X-Bolab-Signature-256"], expected)
    wrong = "sha256=" + hmac.new(b"other", call.body, hashlib.sha256).hexdigest()
    assert call.headers["X-Bolab-Signature-256"] != wrong
    assert call.headers["X-Bolab-Delivery"] == job_id
    assert call.headers["Content-Type"] == "application/json"
    payload = json.loads(call.body)
    assert payload["event"] == "job.finished"
    job = payload["job"]
    assert job["id"] == job_id and job["status"] == "succeeded"
    assert job["progress"]["fraction"] == 1.0
    assert job["summary"] == hooked.status(job_id)["summary"]

    # A job cancelled through the API notifies as well (the API process ended it).
    from tests.test_service_jobs import SLOW_GRID

    slow = hooked.submit(SLOW_GRID, notify_url=receiver.url("/cancelled"))["id"]
    hooked.cancel(slow)
    call = eventually(lambda: receiver.to("/cancelled"), timeout=15)[0]
    assert json.loads(call.body)["job"]["status"] == "cancelled"


def test_retries_with_backoff_then_gives_up(
    hooked: LabClient, receiver: Receiver, store: JobStore
) -> None:
    receiver.script["/flaky"] = [500, 500, 200]
    receiver.script["/down"] = [500]  # always
    flaky = hooked.submit(TINY, notify_url=receiver.url("/flaky"))["id"]
    down = hooked.submit(TINY, notify_url=receiver.url("/down"))["id"]

    calls = eventually(lambda: len(receiver.to("/flaky")) == 3 and receiver.to("/flaky"), 30)
    assert [c.headers["X-Bolab-Attempt"] for c in calls] == ["1", "2", "3"]
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= BACKOFF * 0.9 and gaps[1] >= 2 * BACKOFF * 0.9  # doubling delays
    assert len({c.body for c in calls}) == 1  # the same document, signed the same each time

    eventually(lambda: len(receiver.to("/down")) == ATTEMPTS, timeout=30)
    time.sleep(4 * BACKOFF * 2)  # long enough for a fourth try, were there one
    assert len(receiver.to("/down")) == ATTEMPTS
    redis = store.redis
    assert redis.hget(keys.job(flaky), "webhook") == "delivered"
    assert redis.hget(keys.job(down), "webhook").startswith(f"failed after {ATTEMPTS}")
    assert redis.zscore(keys.WEBHOOKS_DUE, down) is None  # nothing left to deliver


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",  # not on the list: an internal address
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/hook",  # the same machine by another name is still not listed
        "http://lab.example/hook",  # "*.lab.example" is subdomains only
        "http://127.0.0.1.evil.example/hook",
        "http://user:pw@127.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "not a url",
    ],
)
def test_allow_list(hooked: LabClient, url: str) -> None:
    with pytest.raises(LabError) as refused:
        hooked.submit(TINY, notify_url=url)
    assert refused.value.status_code == 422
    assert refused.value.detail[0]["loc"] == ["query", "notify_url"]


def test_allowed_hosts_and_webhooks_off(hooked: LabClient, lab: LabClient) -> None:
    ok = hooked.submit(TINY, notify_url="https://ci.lab.example/hooks/bolab")
    assert ok["status"] == "queued"
    with pytest.raises(LabError) as off:  # the session API has no secret: webhooks are off
        lab.submit(TINY, notify_url="http://127.0.0.1:9/hook")
    assert off.value.status_code == 422 and "BOLAB_WEBHOOK_SECRET" in str(off.value.detail)


@pytest.mark.parametrize("url", ["http://ci.lab.example:abc/hook", "http://["])
def test_unparseable_url_is_422_not_500(hooked: LabClient, url: str) -> None:
    with pytest.raises(LabError) as refused:
        hooked.submit(TINY, notify_url=url)
    assert refused.value.status_code == 422
    assert refused.value.detail[0]["loc"] == ["query", "notify_url"]


def test_url_httpx_rejects_is_a_failed_attempt(
    hooked: LabClient, receiver: Receiver, store: JobStore
) -> None:
    # Allowed by the list, but httpx cannot encode the host (an IDNA error, not an HTTPError).
    odd = hooked.submit(TINY, notify_url="http://xn--a.lab.example/hook")["id"]
    assert hooked.wait(odd, timeout=60)["status"] == "succeeded"
    outcome = eventually(lambda: store.redis.hget(keys.job(odd), "webhook"), timeout=15)
    assert outcome.startswith(f"failed after {ATTEMPTS}")
    # The deliverer lives on: the next job's webhook still arrives.
    after = hooked.submit(TINY, notify_url=receiver.url("/after-odd"))["id"]
    call = eventually(lambda: receiver.to("/after-odd"), timeout=30)[0]
    assert call.headers["X-Bolab-Delivery"] == after
