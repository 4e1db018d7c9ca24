"""Webhooks: `POST /v1/jobs?notify_url=...` gets the job's summary POSTed there when it ends.

The URL rides as a query parameter, so the body stays exactly a JobSpec (scripts that post a
spec file keep working, and the spec's `extra="forbid"` still catches typos). It is accepted
only for http(s) URLs whose host is on `BOLAB_WEBHOOK_ALLOWED_HOSTS` and when
`BOLAB_WEBHOOK_SECRET` is set (else 422): the service must not become a way to reach internal
addresses, and receivers must be able to check where a call came from.

Delivery never runs in a worker. The process that ends a job (`worker.events.job_ended`) only
puts its id in the `bolab:webhooks:due` sorted set (score: when due). Every API process runs
`Deliverer.run_forever`, which claims due ids (pushing their score a lease ahead, so a crashed
deliverer's claim comes due again), POSTs, and on failure reschedules with doubling backoff
until `BOLAB_WEBHOOK_MAX_ATTEMPTS`. Redirects are not followed (they could point anywhere).

The receiver checks `X-Bolab-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body
under the shared secret; `X-Bolab-Delivery` (the job id) is the same on every retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from fastapi.exceptions import RequestValidationError

from service.schemas import job_view
from worker import keys, logs
from worker.settings import Settings
from worker.store import JobStore

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Bolab-Signature-256"

# Claim up to 20 due ids: push each one's score to ARGV[2] (the claim's lease) and return them.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 20)
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def host_allowed(host: str, allowed: str) -> bool:
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in allowed.split(",")):
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        if entry and host == entry:
            return True
    return False


def check_url(url: str, settings: Settings) -> str:
    """The URL if webhooks may go there, else a 422 naming `notify_url` and the reason."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsed lazily: a bad port raises only here
    except ValueError:  # "http://[", "http://h:abc/": a 422 like any other bad URL, not a 500
        parts = None
    if not settings.webhook_secret:
        reason = "webhooks are off: the deployment has no BOLAB_WEBHOOK_SECRET"
    elif parts is None:
        reason = "notify_url is not a valid URL (host or port)"
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        reason = "notify_url must be an absolute http(s) URL"
    elif parts.username or parts.password:
        reason = "notify_url must not carry credentials"
    elif not host_allowed(parts.hostname, settings.webhook_allowed_hosts):
        reason = f"host {parts.hostname!r} is not on BOLAB_WEBHOOK_ALLOWED_HOSTS"
    else:
        return url
    raise RequestValidationError(
        [{"type": "value_error", "loc": ["query", "notify_url"], "msg": reason, "input": url}]
    )


def attach(store: JobStore, job_id: str, url: str) -> None:
    store.redis.hset(keys.job(job_id), "notify_url", url)


def payload(store: JobStore, job_id: str) -> bytes | None:
    job = store.get(job_id)
    if job is None:
        return None
    view = job_view(job, store.progress(job_id), store.summaries(job_id))
    document: dict[str, Any] = {"event": "job.finished", "job": view.model_dump(mode="json")}
    return json.dumps(document, separators=(",", ":")).encode()


class Deliverer:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self._claim = store.redis.register_script(_CLAIM)

    async def run_forever(self) -> None:
        async with httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_s, follow_redirects=False
        ) as http:
            while True:
                try:
                    due = await asyncio.to_thread(self._due)
                    done = await asyncio.gather(
                        *(self._deliver(http, job_id) for job_id in due), return_exceptions=True
                    )
                    # One job's surprise must not end delivery for all: log it; its claim's
                    # lease runs out and it is tried again.
                    for job_id, result in zip(due, done, strict=True):
                        if isinstance(result, Exception):
                            log.error("webhook of job %s failed", job_id, exc_info=result)
                except redis.RedisError:
                    log.warning("webhook outbox unreachable; retrying", exc_info=True)
                await asyncio.sleep(self.settings.webhook_poll_s)

    def _due(self) -> list[str]:
        now = time.time()
        lease = now + 2 * self.settings.webhook_timeout_s + 5
        return list(self._claim(keys=[keys.WEBHOOKS_DUE], args=[now, lease]))

    async def _deliver(self, http: httpx.AsyncClient, job_id: str) -> None:
        url = await asyncio.to_thread(self.store.redis.hget, keys.job(job_id), "notify_url")
        body = await asyncio.to_thread(payload, self.store, job_id)
        if not url or body is None:
            await asyncio.to_thread(self._settle, job_id, "dropped")
            return
        attempt = await asyncio.to_thread(
            self.store.redis.hincrby, keys.WEBHOOK_ATTEMPTS, job_id, 1
        )
        headers = {
            "Content-Type": "application/json",
            "X-Bolab-Event": "job.finished",
            "X-Bolab-Delivery": job_id,
            "X-Bolab-Attempt": str(attempt),
            SIGNATURE_HEADER: sign(self.settings.webhook_secret, body),
        }
        try:
            response = await http.post(url, content=body, headers=headers)
            outcome = f"HTTP {response.status_code}"
            ok = response.is_success
        # Not only httpx.HTTPError: a URL can make httpx raise InvalidURL or an IDNA error.
        # Whatever one POST raises is a failed attempt, retried and capped like the others.
        except Exception as exc:
            outcome, ok = f"{type(exc).__name__}: {exc}", False
        logs.event("webhook.attempt", job_id=job_id, attempt=attempt, outcome=outcome, ok=ok)
        if ok:
            await asyncio.to_thread(self._settle, job_id, "delivered")
        elif attempt >= self.settings.webhook_max_attempts:
            await asyncio.to_thread(self._settle, job_id, f"failed after {attempt}: {outcome}")
        else:
            delay = self.settings.webhook_backoff_s * 2 ** (attempt - 1)
            await asyncio.to_thread(
                self.store.redis.zadd, keys.WEBHOOKS_DUE, {job_id: time.time() + delay}
            )

    def _settle(self, job_id: str, result: str) -> None:
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.zrem(keys.WEBHOOKS_DUE, job_id)
        pipe.hdel(keys.WEBHOOK_ATTEMPTS, job_id)
        pipe.execute()
        # What became of it, for operators; nothing when the job was deleted meanwhile.
        self.store.annotate(job_id, "webhook", result)
