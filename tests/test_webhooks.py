"""Webhooks against real HTTP receivers on 127.0.0.1: the signature covers a timestamp and
verifies under the owner's key, 500s are retried with growing delays up to the cap, a slow
receiver holds up no other receiver and is abandoned at the deadline, an endless answer is read
only up to the cap, only allowed hosts, ports and addresses are used (422 or refused), and the
POST goes to the address that was checked."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bolab.client import LabClient, LabError
from bolab.stack import BOLAB, ApiServer, RedisServer, WorkerProcess
from jobmodel import keys
from jobmodel.store import JobStore
from tests.helpers import ENDLESS, TINY, eventually, keyed_api_on_own_redis

pytestmark = pytest.mark.timeout(120)
SECRET = "test-webhook-secret"
ATTEMPTS = 3
BACKOFF = 0.3
DEADLINE = 6.0  # BOLAB_WEBHOOK_TIMEOUT_S of the APIs under test
TRICKLE_S = 40.0  # how long a trickling answer goes on unless the client hangs up
FLOOD_BYTES = 256 << 20  # how much an endless answer sends unless the client hangs up


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    ended: float | None = None  # when the answer ended (trickle, flood)
    sent: int = 0  # bytes of answer body sent (flood)


@dataclass
class Receiver:
    """Answers each path with its scripted actions in turn (200 once the script runs out): a
    status, "trickle" (a header a byte every half second) or "flood" (200, a body without end).
    """

    port: int
    script: dict[str, list[int | str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]


def _trickle(handler: BaseHTTPRequestHandler, call: Call) -> None:
    try:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while time.monotonic() - call.at < TRICKLE_S:
            time.sleep(0.5)
            handler.wfile.write(b"a")
    except OSError:  # the client hung up
        pass
    call.ended = time.monotonic()
    handler.close_connection = True


def _flood(handler: BaseHTTPRequestHandler, call: Call) -> None:
    handler.send_response(200)
    handler.send_header("Connection", "close")
    handler.end_headers()
    chunk = b"x" * (64 << 10)
    try:
        while call.sent < FLOOD_BYTES:
            handler.wfile.write(chunk)
            call.sent += len(chunk)
    except OSError:
        pass
    call.ended = time.monotonic()
    handler.close_connection = True


def _serve() -> tuple[Receiver, ThreadingHTTPServer]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's spelling)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            call = Call(self.path, dict(self.headers), body, time.monotonic())
            state.calls.append(call)
            todo = state.script.get(self.path) or [200]
            action = todo.pop(0) if len(todo) > 1 or self.path not in state.script else todo[0]
            if action == "trickle":
                _trickle(self, call)
            elif action == "flood":
                _flood(self, call)
            else:
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state, server = _serve()
    yield state
    server.shutdown()


@pytest.fixture(scope="module")
def slow_receiver() -> Iterator[Receiver]:
    """Another receiver (its own port), for answers that take long or never end."""
    state, server = _serve()
    yield state
    server.shutdown()


def webhook_env(*receivers: Receiver, allow_private: bool) -> dict[str, str]:
    ports = ",".join(["80", "443", *(str(r.port) for r in receivers)])
    return {
        "BOLAB_WEBHOOK_SECRET": SECRET,
        "BOLAB_WEBHOOK_ALLOWED_PORTS": ports,
        "BOLAB_WEBHOOK_ALLOW_PRIVATE": "true" if allow_private else "false",
        "BOLAB_WEBHOOK_MAX_ATTEMPTS": str(ATTEMPTS),
        "BOLAB_WEBHOOK_BACKOFF_S": str(BACKOFF),
        "BOLAB_WEBHOOK_TIMEOUT_S": str(DEADLINE),
        "BOLAB_WEBHOOK_POLL_S": "0.05",
    }


@pytest.fixture(scope="module")
def hooked_api(
    redis_server: RedisServer,
    worker_process: WorkerProcess,
    lab_dir: Path,
    receiver: Receiver,
    slow_receiver: Receiver,
) -> Iterator[ApiServer]:
    """An API with webhooks on (secret, allow-list of 127.0.0.1 and the receivers' ports,
    private addresses allowed since the receivers are local, quick retries)."""
    env = {
        **webhook_env(receiver, slow_receiver, allow_private=True),
        "BOLAB_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,*.lab.example",
    }
    server = ApiServer(redis_server.url, env=env, log_path=lab_dir / "logs" / "hooked-api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hooked(hooked_api: ApiServer) -> Iterator[LabClient]:
    with LabClient(hooked_api.url) as client:
        yield client


def ended_now(client: LabClient, url: str) -> str:
    """A job that ends at once (cancelled while queued), so its webhook is due now."""
    job_id = client.submit(ENDLESS, notify_url=url)["id"]
    client.cancel(job_id)
    return job_id


def owner_key(owner: str) -> str:
    """The key an owner's receivers check: HMAC-SHA256(BOLAB_WEBHOOK_SECRET, "bolab-webhook:" +
    owner), in hex."""
    return hmac.new(SECRET.encode(), f"bolab-webhook:{owner}".encode(), hashlib.sha256).hexdigest()


def test_signed_summary_on_success_and_cancel(hooked: LabClient, receiver: Receiver) -> None:
    job_id = hooked.submit(TINY, notify_url=receiver.url("/done"))["id"]
    assert hooked.wait(job_id, timeout=60)["status"] == "succeeded"
    call = eventually(lambda: receiver.to("/done"), timeout=15)[0]

    payload = json.loads(call.body)
    secret = owner_key(payload["job"]["owner"])
    stamp = call.headers["X-Bolab-Timestamp"]
    assert abs(int(stamp) - time.time()) < 60
    signed = stamp.encode() + b"." + call.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    signature = call.headers["X-Bolab-Signature-256"]
    assert hmac.compare_digest(signature, expected)
    from service.webhooks import verify

    assert verify(secret, stamp, signature, call.body)
    # A receiver refuses a replay minutes later, a moved timestamp, another body or key.
    assert not verify(secret, stamp, signature, call.body, now=int(stamp) + 301)
    assert not verify(secret, str(int(stamp) + 1), signature, call.body, now=int(stamp))
    assert not verify(secret, stamp, signature, call.body + b" ", now=int(stamp))
    assert not verify(SECRET, stamp, signature, call.body, now=int(stamp))
    assert call.headers["X-Bolab-Delivery"] == job_id
    assert call.headers["Content-Type"] == "application/json"
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


def test_owner_key_from_the_cli() -> None:
    argv = [*BOLAB, "keys", "webhook-secret", "alice"]
    env = {**os.environ, "BOLAB_WEBHOOK_SECRET": SECRET}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == owner_key("alice") != owner_key("bob")
    env["BOLAB_WEBHOOK_SECRET"] = ""
    off = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 1 and "BOLAB_WEBHOOK_SECRET" in off.stderr


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
    assert len({c.body for c in calls}) == 1  # the same document each time (signed anew)

    eventually(lambda: len(receiver.to("/down")) == ATTEMPTS, timeout=30)
    time.sleep(4 * BACKOFF * 2)  # long enough for a fourth try, were there one
    assert len(receiver.to("/down")) == ATTEMPTS
    redis = store.redis
    assert redis.hget(keys.job(flaky), "webhook") == "delivered"
    assert redis.hget(keys.job(down), "webhook").startswith(f"failed after {ATTEMPTS}")
    assert redis.zscore(keys.WEBHOOKS_DUE, down) is None  # nothing left to deliver


def test_slow_receiver_holds_up_no_other(
    hooked: LabClient, receiver: Receiver, slow_receiver: Receiver, store: JobStore
) -> None:
    slow_receiver.script["/slow"] = ["trickle", 200]
    slow = ended_now(hooked, slow_receiver.url("/slow"))
    first = eventually(lambda: slow_receiver.to("/slow"), timeout=15)[0]

    other = ended_now(hooked, receiver.url("/other"))
    call = eventually(lambda: receiver.to("/other"), timeout=60)[0]
    assert call.headers["X-Bolab-Delivery"] == other
    # It arrived while the slow receiver still held the first delivery open.
    assert first.ended is None or call.at < first.ended
    eventually(lambda: store.redis.hget(keys.job(slow), "webhook"), timeout=60)


def test_delivery_over_the_deadline_is_abandoned_and_retried(
    hooked: LabClient, slow_receiver: Receiver, store: JobStore
) -> None:
    slow_receiver.script["/late"] = ["trickle", 200]
    job_id = ended_now(hooked, slow_receiver.url("/late"))
    outcome = eventually(lambda: store.redis.hget(keys.job(job_id), "webhook"), timeout=90)
    assert outcome == "delivered"
    first, second = slow_receiver.to("/late")
    assert [first.headers["X-Bolab-Attempt"], second.headers["X-Bolab-Attempt"]] == ["1", "2"]
    # The client hung up on the trickle at its deadline (the trickle would go on much longer;
    # the receiver notices at its next writes), then tried again after the backoff.
    ended = eventually(lambda: first.ended, timeout=10)
    assert DEADLINE * 0.9 <= ended - first.at < TRICKLE_S / 2
    assert second.at - first.at >= DEADLINE + BACKOFF * 0.9


def test_endless_answer_is_read_only_up_to_the_cap(
    hooked: LabClient, slow_receiver: Receiver, store: JobStore
) -> None:
    slow_receiver.script["/flood"] = ["flood"]
    job_id = ended_now(hooked, slow_receiver.url("/flood"))
    outcome = eventually(lambda: store.redis.hget(keys.job(job_id), "webhook"), timeout=60)
    assert outcome == "delivered"  # the status decides
    call = slow_receiver.to("/flood")[0]
    eventually(lambda: call.ended, timeout=15)
    # 64 KiB read; the rest is what the two sockets' buffers held when the client hung up.
    assert call.sent < 32 << 20


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


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379/hook", "https://ci.lab.example:8443/hook", "http://127.0.0.1:22/"],
)
def test_port_not_allowed_is_422(hooked: LabClient, url: str) -> None:
    with pytest.raises(LabError) as refused:
        hooked.submit(TINY, notify_url=url)
    assert refused.value.status_code == 422
    assert refused.value.detail[0]["loc"] == ["query", "notify_url"]
    assert "BOLAB_WEBHOOK_ALLOWED_PORTS" in refused.value.detail[0]["msg"]


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
    # Allowed by the list, but its host cannot be encoded (an IDNA error, not an HTTPError).
    odd = hooked.submit(TINY, notify_url="http://xn--a.lab.example/hook")["id"]
    assert hooked.wait(odd, timeout=60)["status"] == "succeeded"
    outcome = eventually(lambda: store.redis.hget(keys.job(odd), "webhook"), timeout=15)
    assert outcome.startswith(f"failed after {ATTEMPTS}")
    # The deliverer lives on: the next job's webhook still arrives.
    after = hooked.submit(TINY, notify_url=receiver.url("/after-odd"))["id"]
    call = eventually(lambda: receiver.to("/after-odd"), timeout=30)[0]
    assert call.headers["X-Bolab-Delivery"] == after


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, lab_dir: Path, api_keys: dict, receiver: Receiver
) -> Iterator[tuple[LabClient, JobStore]]:
    """A keyed API with webhooks on and private addresses refused (the default), on a Redis
    of its own (its deliverer must not take the other API's deliveries), with no worker."""
    env = {
        **webhook_env(receiver, allow_private=False),
        "BOLAB_WEBHOOK_ALLOWED_HOSTS": "localhost,127.0.0.1",
    }
    where = tmp_path_factory.mktemp("strict-webhooks")
    with keyed_api_on_own_redis(where, lab_dir / "keys", **env) as api:
        store = JobStore.from_url(api.env["BOLAB_REDIS_URL"])
        with LabClient(api.url, api_key=api_keys["alice"]) as client:
            yield client, store
        store.redis.close()


def test_private_ip_literal_is_422(strict: tuple[LabClient, JobStore], receiver: Receiver) -> None:
    client, _ = strict
    with pytest.raises(LabError) as refused:
        client.submit(TINY, notify_url=receiver.url("/literal"))
    assert refused.value.status_code == 422
    assert "not public" in refused.value.detail[0]["msg"]


def test_host_resolving_to_private_address_is_refused(
    strict: tuple[LabClient, JobStore], receiver: Receiver
) -> None:
    client, store = strict
    job_id = ended_now(client, receiver.url("/private", host="localhost"))
    outcome = eventually(lambda: store.redis.hget(keys.job(job_id), "webhook"), timeout=30)
    assert outcome.startswith("refused: host 'localhost' resolves to 127.0.0.1")
    assert receiver.to("/private") == []  # never called, never retried
    assert store.redis.zscore(keys.WEBHOOKS_DUE, job_id) is None


@pytest.mark.parametrize(
    ("address", "is_public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # shared address space (carrier NAT)
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("240.0.0.1", False),  # reserved
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a01:203", False),  # NAT64 of 10.1.2.3
    ],
)
def test_public_addresses(address: str, is_public: bool) -> None:
    from service.webhook_targets import public

    assert public(ipaddress.ip_address(address)) is is_public


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_pinned_https_keeps_host_and_server_name(tmp_path: Path) -> None:
    """The POST goes to the checked address, yet the receiver sees its own name in `Host` and
    in TLS (SNI), and the certificate is checked against that name, not the address."""
    from jobmodel.settings import Settings
    from service.webhook_targets import resolve

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    seen: dict[str, str | None] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's spelling)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen["host"], seen["sni"] = self.headers["Host"], getattr(self.request, "sni", None)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server_tls.sni_callback = lambda sock, name, _: setattr(sock, "sni", name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(
        webhook_secret=SECRET,
        webhook_allowed_hosts="localhost",
        webhook_allowed_ports=str(port),
        webhook_allow_private=True,
    )

    async def post() -> int:
        with ThreadPoolExecutor(1) as resolver:
            target = await resolve(f"https://localhost:{port}/hook", settings, resolver)
        assert target.url.host == "127.0.0.1"
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trust, trust_env=False) as http:
            answer = await http.post(
                target.url, content=b"{}", headers=target.headers, extensions=target.extensions
            )
        return answer.status_code

    try:
        assert asyncio.run(post()) == 204
    finally:
        server.shutdown()
    assert seen == {"host": f"localhost:{port}", "sni": "localhost"}


def test_one_receiver_holds_at_most_its_share(
    tmp_path: Path, receiver: Receiver, slow_receiver: Receiver
) -> None:
    """Two deliveries in flight at most, one per receiver: three stuck on one receiver still
    leave a slot for another receiver's (a deliverer in this process, on a Redis of its own)."""
    from jobmodel.settings import Settings
    from service.webhooks import Deliverer

    redis = RedisServer(tmp_path / "redis", log_path=tmp_path / "redis.log")
    redis.start()
    store = JobStore.from_url(redis.url)
    settings = Settings(
        redis_url=redis.url,
        webhook_secret=SECRET,
        webhook_allowed_hosts="127.0.0.1",
        webhook_allowed_ports=f"{receiver.port},{slow_receiver.port}",
        webhook_allow_private=True,
        webhook_timeout_s=DEADLINE,
        webhook_poll_s=0.05,
        webhook_concurrency=2,
        webhook_per_receiver=1,
    )
    slow_receiver.script["/share"] = ["trickle"]

    def ended(url: str) -> str:
        job = store.create(
            dict(TINY), runs_total=2, cells_total=1, queue="cpu", notify_url=url
        )
        store.cancel(job.id)  # ends it: its webhook is due
        return job.id

    async def deliver() -> None:
        running = asyncio.create_task(Deliverer(store, settings).run_forever())
        try:
            async with asyncio.timeout(30):
                for _ in range(3):
                    ended(slow_receiver.url("/share"))
                while not slow_receiver.to("/share"):
                    await asyncio.sleep(0.05)
                ended(receiver.url("/share-other"))
                while not receiver.to("/share-other"):
                    await asyncio.sleep(0.05)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    try:
        asyncio.run(deliver())
    finally:
        store.redis.close()
        redis.stop()
    first = slow_receiver.to("/share")[0]
    assert len(slow_receiver.to("/share")) == 1  # the other two waited for their turn
    assert receiver.to("/share-other")[0].at < (first.ended or float("inf"))
