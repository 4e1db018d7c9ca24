"""`Idempotency-Key` on POST /v1/jobs, against a real uvicorn API and Redis.

Same key and body: the same job (a retry after a lost answer creates nothing); same key, other
body: 409; keys are scoped per caller; concurrent retries race to exactly one job.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from bolab.client import LabClient
from bolab.stack import ApiServer
from tests.helpers import TINY

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _free_quota(idle_lab: ApiServer, api_keys: dict) -> None:
    """The idle lab allows 3 queued jobs per key and has no worker: cancel what is queued."""
    with LabClient(idle_lab.url, api_key=api_keys["root"]) as root:
        for job in root.list(status="queued", limit=200)["items"]:
            root.cancel(job["id"])


def _post(server: ApiServer, key: str, idem: str | None, spec: dict) -> httpx.Response:
    headers = {"X-API-Key": key, **({"Idempotency-Key": idem} if idem else {})}
    return httpx.post(f"{server.url}/v1/jobs", json=spec, headers=headers, timeout=30)


def _job_ids(server: ApiServer, key: str) -> list[str]:
    with LabClient(server.url, api_key=key) as lab:
        return [j["id"] for j in lab.list(limit=200)["items"]]


def test_same_key_same_body_is_the_same_job(idle_lab: ApiServer, api_keys: dict) -> None:
    idem = str(uuid.uuid4())
    first = _post(idle_lab, api_keys["root"], idem, TINY)
    again = _post(idle_lab, api_keys["root"], idem, dict(reversed(TINY.items())))  # same body
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    assert _job_ids(idle_lab, api_keys["root"]).count(first.json()["id"]) == 1
    without = _post(idle_lab, api_keys["root"], None, TINY)  # no key: a new job every time
    assert without.json()["id"] != first.json()["id"]


def test_same_key_other_body_is_409(idle_lab: ApiServer, api_keys: dict) -> None:
    idem = str(uuid.uuid4())
    job_id = _post(idle_lab, api_keys["root"], idem, TINY).json()["id"]
    response = _post(idle_lab, api_keys["root"], idem, {**TINY, "seed": 7})
    assert response.status_code == 409
    assert f"already used for job {job_id} with a different body" in response.json()["detail"]


def test_keys_are_scoped_per_caller(idle_lab: ApiServer, api_keys: dict) -> None:
    idem = str(uuid.uuid4())
    bobs = _post(idle_lab, api_keys["bob"], idem, TINY)
    roots = _post(idle_lab, api_keys["root"], idem, {**TINY, "seed": 3})  # no 409: not bob's key
    assert bobs.status_code == roots.status_code == 202
    assert bobs.json()["id"] != roots.json()["id"]


def test_concurrent_retries_make_one_job(idle_lab: ApiServer, api_keys: dict) -> None:
    idem, before = str(uuid.uuid4()), set(_job_ids(idle_lab, api_keys["root"]))
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _post(idle_lab, api_keys["root"], idem, TINY), range(16)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(set(_job_ids(idle_lab, api_keys["root"])) - before) == 1


def test_replay_is_not_refused_by_the_quota(idle_lab: ApiServer, api_keys: dict) -> None:
    key, idem = api_keys["alice"], str(uuid.uuid4())
    first = _post(idle_lab, key, idem, TINY)
    while _post(idle_lab, key, None, TINY).status_code == 202:
        pass  # fill alice's quota of queued jobs (no worker here)
    replay = _post(idle_lab, key, idem, TINY)
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]


def test_key_is_stored_hashed_with_a_ttl(idle_lab: ApiServer, api_keys: dict) -> None:
    idem = f"secret-order-{uuid.uuid4()}"
    _post(idle_lab, api_keys["bob"], idem, TINY)
    client = redis.Redis.from_url(idle_lab.env["BOLAB_REDIS_URL"], decode_responses=True)
    with client:
        names = client.keys("bolab:idem:bob:*")
        assert names and all(idem not in name for name in names)
        assert all(0 < client.ttl(name) <= 24 * 3600 for name in names)
