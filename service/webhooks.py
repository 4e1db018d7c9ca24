"""Webhooks: `POST /v1/jobs?notify_url=...` gets the job's summary POSTed there when it ends.

The URL rides as a query parameter, so the body stays exactly a JobSpec (scripts that post a
spec file keep working, and the spec's `extra="forbid"` still catches typos). Where it may point
is `service.webhook_targets`' business (allowed hosts and ports, public addresses only), and it
is accepted only when `BOLAB_WEBHOOK_SECRET` is set (else 422): receivers must be able to check
where a call came from.

Delivery never runs in a worker. The process that ends a job (`jobmodel.events.job_ended`) only
puts its id in the `bolab:webhooks:due` sorted set (score: when due). Every API process runs
`Deliverer.run_forever` (a `service.outbox_drain.Drain`), which claims due ids (pushing their
score a lease ahead, so a crashed deliverer's claim comes due again) and runs each delivery as a
task of its own: at most `BOLAB_WEBHOOK_CONCURRENCY` in flight and `BOLAB_WEBHOOK_PER_RECEIVER`
to one receiver, so a slow receiver holds up only its own deliveries. An attempt (resolve,
connect, send, answer) has `BOLAB_WEBHOOK_TIMEOUT_S` in all, and at most
`BOLAB_WEBHOOK_MAX_RESPONSE_BYTES` of the answer is read; the status decides. A failed attempt
is retried with doubling backoff until `BOLAB_WEBHOOK_MAX_ATTEMPTS`. Redirects are not followed
(they could point anywhere).

Each call carries `X-Bolab-Timestamp: <unix seconds>` and `X-Bolab-Signature-256:
sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<raw body>` under the job owner's key (`verify`
is the receiver's check). `X-Bolab-Delivery` (the job id) is the same on every retry: the
receiver's deduplication key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from jobmodel import logs
from jobmodel.outbox import WEBHOOK
from jobmodel.settings import Settings
from jobmodel.store import JobStore
from service import webhook_targets as targets
from service.outbox_drain import Decision, Drain, Failed, Later, Pace, Settle
from service.schemas import job_view

SIGNATURE_HEADER = "X-Bolab-Signature-256"
TIMESTAMP_HEADER = "X-Bolab-Timestamp"
TOLERANCE_S = 300  # how far from now a receiver should accept a timestamp



def owner_secret(master: str, owner: str) -> str:
    """The key that signs `owner`'s webhooks: one owner's receivers cannot forge another's."""
    return hmac.new(master.encode(), f"bolab-webhook:{owner}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """A receiver's check: the signature covers this timestamp and body, and the timestamp is
    within `tolerance_s` of now (an older call is a replay)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    fresh = abs((time.time() if now is None else now) - sent) <= tolerance_s
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def payload(store: JobStore, job_id: str) -> tuple[str, bytes] | None:
    """The job's owner and the document its webhook carries; None when the job is gone."""
    job = store.get(job_id)
    if job is None:
        return None
    view = job_view(job, store.progress(job_id), store.summaries(job_id))
    document: dict[str, Any] = {"event": "job.finished", "job": view.model_dump(mode="json")}
    return job.owner, json.dumps(document, separators=(",", ":")).encode()


async def read_at_most(response: httpx.Response, cap: int) -> int:
    """Read the answer's body until `cap` bytes (plus at most one network read) have come,
    undecoded; the rest is never read (closing the response drops the connection)."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen >= cap:
            break
    return seen


class Deliverer(Drain):
    channel = WEBHOOK

    def __init__(self, store: JobStore, settings: Settings) -> None:
        pace = Pace(
            concurrency=settings.webhook_concurrency,
            lease_s=2 * settings.webhook_timeout_s + 5,
            poll_s=settings.webhook_poll_s,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
        )
        super().__init__(store, pace)
        self.settings = settings
        self._busy: Counter[str] = Counter()  # receiver -> its deliveries in flight
        self._http: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[httpx.AsyncClient]:
        # Name lookups block a thread each: their own threads, never the event loop's.
        self._resolver = ThreadPoolExecutor(
            self.settings.webhook_concurrency, thread_name_prefix="webhook-dns"
        )
        try:
            async with self._client() as self._http:
                yield self._http
        finally:
            self._resolver.shutdown(wait=False, cancel_futures=True)

    def _client(self) -> httpx.AsyncClient:
        # No kept-alive connections: each delivery connects to the address it checked. No
        # proxies from the environment: the address check must be about the receiver itself.
        limits = httpx.Limits(
            max_connections=self.settings.webhook_concurrency, max_keepalive_connections=0
        )
        return httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=limits,
        )

    async def handle(self, job_id: str) -> Decision:
        url = await asyncio.to_thread(self.outbox.url, job_id)
        document = await asyncio.to_thread(payload, self.store, job_id)
        if not url or document is None:
            return Settle("dropped")
        receiver = targets.receiver(url)
        if self._busy[receiver] >= self.settings.webhook_per_receiver:
            # Not an attempt: come back once a delivery to this receiver has had its deadline.
            return Later(self.settings.webhook_timeout_s)
        self._busy[receiver] += 1
        try:
            return await self._attempt(job_id, url, *document)
        finally:
            self._busy[receiver] -= 1
            if not self._busy[receiver]:
                del self._busy[receiver]

    async def _attempt(self, job_id: str, url: str, owner: str, body: bytes) -> Decision:
        attempt = await asyncio.to_thread(self.outbox.count_attempt, job_id)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Bolab-Event": "job.finished",
            "X-Bolab-Delivery": job_id,
            "X-Bolab-Attempt": str(attempt),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(
                owner_secret(self.settings.webhook_secret, owner), timestamp, body
            ),
        }
        assert self._http is not None, "handled inside the drain's session"
        try:
            ok, outcome = await self._post(self._http, url, body, headers)
        except targets.Refused as refused:
            logs.event("webhook.refused", job_id=job_id, owner=owner, error=str(refused))
            return Settle(f"refused: {refused}")
        logs.event("webhook.attempt", job_id=job_id, attempt=attempt, outcome=outcome, ok=ok)
        return Settle("delivered") if ok else Failed(attempt, outcome)

    async def _post(
        self, http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[bool, str]:
        """One attempt within the deadline: resolve and check the host, POST to the checked
        address, read at most the cap of the answer. Its status decides, even when reading
        the rest of the answer fails or runs out of time."""
        deadline = self.settings.webhook_timeout_s
        status: int | None = None
        try:
            async with asyncio.timeout(deadline):
                target = await targets.resolve(url, self.settings, self._resolver)
                async with http.stream(
                    "POST",
                    target.url,
                    content=body,
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                ) as response:
                    status = response.status_code
                    await read_at_most(response, self.settings.webhook_max_response_bytes)
        except targets.Refused:
            raise
        # Not only httpx.HTTPError: a URL can make httpx or the resolver raise InvalidURL or an
        # IDNA error. Whatever one POST raises is a failed attempt, retried like the others.
        except Exception as exc:
            if status is None:
                if isinstance(exc, TimeoutError):
                    return False, f"no answer within the deadline of {deadline:g} s"
                return False, f"{type(exc).__name__}: {exc}"
        return status is not None and 200 <= status < 300, f"HTTP {status}"
