"""A Redis at its maxmemory (noeviction) refuses new jobs with 503 and a clear reason; what is
stored stays readable and unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bolab.stack import ApiServer, RedisServer
from tests.helpers import TINY

pytestmark = pytest.mark.timeout(120)

CHUNK = 64 * 1024


@pytest.fixture
def small_lab(tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A Redis capped at 4 MB and an API on it, no worker: accepted jobs stay queued."""
    server = RedisServer(tmp_path / "redis", maxmemory="4mb", log_path=tmp_path / "redis.log")
    server.start()
    api = ApiServer(server.url, log_path=tmp_path / "api.log")
    client = redis.Redis.from_url(server.url)
    try:
        api.start()
        yield api.url, client
    finally:
        client.close()
        api.stop()
        server.stop()


def fill(client: redis.Redis) -> int:
    """Write filler keys until Redis refuses for want of memory; the number written.

    Then lower the cap a little below what is in use (as an admin may): the first refusal
    counts the refused command's own buffer, which Redis frees again afterwards.
    """
    written = 0
    while True:
        try:
            client.set(f"filler:{written}", b"x" * CHUNK)
        except redis.exceptions.OutOfMemoryError:
            break
        written += 1
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 4 * CHUNK)
    return written


def snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def test_full_store_refuses_submit_with_503_and_changes_nothing(
    small_lab: tuple[str, redis.Redis],
) -> None:
    url, client = small_lab
    accepted = httpx.post(f"{url}/v1/jobs", json=TINY, timeout=30)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    before_view = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    assert fill(client) > 0
    before = snapshot(client)

    refused = httpx.post(f"{url}/v1/jobs", json=TINY, timeout=30)
    assert refused.status_code == 503, refused.text
    detail = refused.json()["detail"]
    assert "full" in detail and "maxmemory" in detail, detail

    view = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30)
    assert view.status_code == 200 and view.json() == before_view
    assert httpx.get(f"{url}/v1/jobs", timeout=30).status_code == 200
    assert snapshot(client) == before
