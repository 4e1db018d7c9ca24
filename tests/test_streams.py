"""Event streams are capped per key and per API process: one key's streams, however many it
asks for, cannot make another key's streams or requests fail. An API with small caps on its own
Redis, no worker: jobs stay queued and their streams stay open (keep-alives every 0.2 s)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from bolab.stack import ApiServer
from tests.helpers import TINY, eventually, keyed_api_on_own_redis

pytestmark = pytest.mark.timeout(180)

PER_KEY, TOTAL = 3, 5


@pytest.fixture(scope="module")
def capped_api(
    tmp_path_factory: pytest.TempPathFactory, lab_dir: Path, api_keys: dict
) -> Iterator[ApiServer]:
    caps = {
        "BOLAB_MAX_STREAMS_PER_KEY": str(PER_KEY),
        "BOLAB_MAX_STREAMS": str(TOTAL),
        "BOLAB_SSE_KEEPALIVE_S": "0.2",
    }
    where = tmp_path_factory.mktemp("streams")
    with keyed_api_on_own_redis(where, lab_dir / "keys", **caps) as api:
        yield api


def _client(api: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=api.url,
        headers={"X-API-Key": key},
        timeout=30,
        limits=httpx.Limits(max_connections=None),  # one connection per open stream
    )


def _open(stack: ExitStack, client: httpx.Client, job_id: str) -> httpx.Response:
    """Open a stream and keep it open (on the stack); returns its response."""
    response = stack.enter_context(client.stream("GET", f"/v1/jobs/{job_id}/events"))
    if response.status_code == 200:
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"  # the stream is being served
        stack.callback(lines.close)  # held until the stack closes: closing it disconnects
    return response


def _try(client: httpx.Client, job_id: str) -> httpx.Response:
    """Ask for a stream and close it at once; the body is read only when it is refused."""
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        if response.status_code != 200:
            response.read()
        return response


def _status(client: httpx.Client, job_id: str) -> int:
    return _try(client, job_id).status_code


def test_one_key_cannot_take_the_streams_of_others(capped_api: ApiServer, api_keys: dict) -> None:
    alice, bob, root = (_client(capped_api, api_keys[who]) for who in ("alice", "bob", "root"))
    with alice, bob, root, ExitStack() as held:
        mine = alice.post("/v1/jobs", json=TINY).json()["id"]
        theirs = bob.post("/v1/jobs", json=TINY).json()["id"]
        assert all(_open(held, alice, mine).status_code == 200 for _ in range(PER_KEY))

        over = _try(alice, mine)
        assert over.status_code == 429
        assert "BOLAB_MAX_STREAMS_PER_KEY" in over.json()["detail"]
        assert int(over.headers["Retry-After"]) > 0
        with ThreadPoolExecutor(16) as pool:  # a flood from the same key: all refused at once
            flood = list(pool.map(lambda _: _status(alice, mine), range(40)))
        assert set(flood) == {429}

        # The other key is untouched: its streams, its job, a new job.
        assert all(_open(held, bob, theirs).status_code == 200 for _ in range(TOTAL - PER_KEY))
        assert bob.get(f"/v1/jobs/{theirs}").status_code == 200
        assert bob.post("/v1/jobs", json=TINY).status_code == 202
        # The process's cap: full now, for every key; 503, never a failed Redis pool.
        full = _try(root, theirs)
        assert full.status_code == 503 and "BOLAB_MAX_STREAMS" in full.json()["detail"]
        assert "Retry-After" in full.headers
        assert root.get(f"/v1/jobs/{theirs}").status_code == 200
        assert root.get("/readyz").json()["redis"] is True

    # Streams closed by their clients give their slots back.
    with _client(capped_api, api_keys["alice"]) as again, ExitStack() as held:
        eventually(lambda: _status(again, mine) == 200, timeout=10)
        assert all(_open(held, again, mine).status_code == 200 for _ in range(PER_KEY))


def test_refused_streams_hold_no_slot(capped_api: ApiServer, api_keys: dict) -> None:
    """Streams refused before they start (another's job, a malformed id) give their slot back."""
    with (
        _client(capped_api, api_keys["alice"]) as alice,
        _client(capped_api, api_keys["bob"]) as bob,
    ):
        theirs = bob.post("/v1/jobs", json=TINY).json()["id"]
        mine = alice.post("/v1/jobs", json=TINY).json()["id"]
        eventually(lambda: _status(alice, mine) == 200, timeout=10)  # earlier slots are back
        for _ in range(PER_KEY * 3):
            assert _status(alice, theirs) == 404
            assert _status(alice, "0000000000000000dead:events") == 404
        with ExitStack() as held:
            assert all(_open(held, alice, mine).status_code == 200 for _ in range(PER_KEY))


def test_a_hundred_streams_of_one_key_leave_others_working(
    tmp_path_factory: pytest.TempPathFactory, lab_dir: Path, api_keys: dict
) -> None:
    """The default caps: one key asks for 110 streams (more than a default Redis pool holds);
    it gets its share, and another key's streams and requests answer as usual."""
    where = tmp_path_factory.mktemp("hundred")
    with (
        keyed_api_on_own_redis(where, lab_dir / "keys") as api,
        _client(api, api_keys["alice"]) as alice,
        _client(api, api_keys["bob"]) as bob,
        ExitStack() as held,
    ):
        mine = alice.post("/v1/jobs", json=TINY).json()["id"]
        theirs = bob.post("/v1/jobs", json=TINY).json()["id"]
        answers = [_open(held, alice, mine).status_code for _ in range(110)]
        assert _open(held, bob, theirs).status_code == 200
        assert bob.get(f"/v1/jobs/{theirs}").status_code == 200
        assert bob.get("/readyz").json()["redis"] is True
        assert answers.count(200) == 10 and answers.count(429) == 100  # the default cap


def test_dropped_streams_give_back_slots_and_connections(
    capped_api: ApiServer, api_keys: dict
) -> None:
    """Clients that go away while their stream waits in Redis (XREAD BLOCK) free the slot and
    the pool connection: after many drops, streams up to the process's cap still all work."""
    alice, bob = (_client(capped_api, api_keys[who]) for who in ("alice", "bob"))
    with alice, bob:
        mine = alice.post("/v1/jobs", json=TINY).json()["id"]
        theirs = bob.post("/v1/jobs", json=TINY).json()["id"]
        for _ in range(10):
            with ExitStack() as dropped:  # open PER_KEY, let them block, drop them all
                eventually(lambda: _status(alice, mine) == 200, timeout=10)
                for _ in range(PER_KEY):
                    _first_event(dropped, alice, mine)
        with ExitStack() as held:
            eventually(lambda: _status(alice, mine) == 200, timeout=10)
            kinds = [_first_event(held, alice, mine) for _ in range(PER_KEY)]
            kinds += [_first_event(held, bob, theirs) for _ in range(TOTAL - PER_KEY)]
            assert kinds == ["status"] * TOTAL


def _first_event(stack: ExitStack, client: httpx.Client, job_id: str) -> str:
    """Open a stream (held on the stack) and read up to its first event's kind."""
    response = stack.enter_context(client.stream("GET", f"/v1/jobs/{job_id}/events"))
    assert response.status_code == 200
    lines = response.iter_lines()
    stack.callback(lines.close)
    return next(line for line in lines if line.startswith("event:")).split(": ", 1)[1]
