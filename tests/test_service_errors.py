"""Bad input answers 4xx with a clear JSON body that names what is wrong; never 500."""

from __future__ import annotations

import json

import pytest

from bolab.client import LabClient
from jobmodel import keys
from jobmodel.store import JobStore
from tests.helpers import TINY
from tests.inprocess import AppClient

pytestmark = pytest.mark.timeout(60)

BAD_SPECS = [
    pytest.param({**TINY, "n": -5}, ["n"], id="negative-n"),
    pytest.param({**TINY, "gamma": 1.5}, ["gamma"], id="gamma-1.5"),
    pytest.param({**TINY, "width": 15}, ["width"], id="odd-width"),
    pytest.param(
        {**TINY, "corruption_rate": 0.1, "num_corrupt": 2},
        ["corruption_rate", "num_corrupt"],
        id="both-corruption-fields",
    ),
    pytest.param({**TINY, "grid": {"depth": [1, 2]}}, ["grid", "depth"], id="unknown-grid-axis"),
    pytest.param({**TINY, "gamma": 2, "width": 3}, ["gamma", "width"], id="every-field-named"),
    pytest.param({**TINY, "colour": "red"}, ["colour"], id="unknown-field"),
]


@pytest.mark.fast
@pytest.mark.parametrize(("spec", "fields"), BAD_SPECS)
def test_bad_spec_is_422_naming_fields(app: AppClient, spec: dict, fields: list[str]) -> None:
    response = app.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    detail = json.dumps(response.json()["detail"])
    for field in fields:
        assert field in detail, f"{field!r} not named in {detail}"


@pytest.mark.fast
def test_malformed_json_is_422(app: AppClient) -> None:
    response = app.post(
        "/v1/jobs", content=b'{"n": 20, "d":', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.fast
@pytest.mark.parametrize("body", [b"[]", b"42", b'"spec"', b"null"])
def test_non_object_body_is_422(app: AppClient, body: bytes) -> None:
    response = app.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422


@pytest.mark.fast
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{id}"),
        ("GET", "/v1/jobs/{id}/results"),
        ("GET", "/v1/jobs/{id}/results?format=csv"),
        ("GET", "/v1/jobs/{id}/plot.png"),
        ("POST", "/v1/jobs/{id}/cancel"),
    ],
)
@pytest.mark.parametrize("job_id", ["0000000000000000dead", "no-such-job", "%E2%9C%93"])
def test_unknown_job_is_404(app: AppClient, method: str, path: str, job_id: str) -> None:
    response = app.request(method, path.format(id=job_id))
    assert response.status_code == 404
    assert "no job" in response.json()["detail"]


@pytest.mark.fast
def test_bad_results_format_is_422(app: AppClient) -> None:
    job_id = app.post("/v1/jobs", json=TINY).json()["id"]
    assert app.get(f"/v1/jobs/{job_id}/results?format=xml").status_code == 422


@pytest.mark.fast
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"\xff\xfe garbage", "application/json"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json"),
        (b'{"n": NaN, "d": 10}', "application/json"),
        (b'{"n": 1e999, "d": 10}', "application/json"),
        (b'{"n": 20, "d": 40, "gamma": "0.1; drop"}', "application/json"),
        (b'{"n": 20, "d": 40, "grid": {"n": [true, {"a": []}]}}', "application/json"),
        (b"n=20&d=40", "application/x-www-form-urlencoded"),
        (b'{"n": 20, "d": 40}', "text/plain"),
    ],
)
def test_hostile_bodies_are_4xx(app: AppClient, body: bytes, content_type: str) -> None:
    response = app.post("/v1/jobs", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert "detail" in response.json()


def _malformed_ids(job_id: str) -> list[str]:
    """Ids that name other keys of a real job, or no job at all (as sent on the wire)."""
    return [
        f"{job_id}:cells",
        f"{job_id}:summaries",
        f"{job_id}:events",
        f"{job_id}:lease:plan",
        f"{job_id}:cancel",
        job_id.upper(),
        f"{job_id}0",
        "a" * 5000,
        "%E2%9C%93" * 3,
        "%00",
        f"{job_id}%00",
        f"{job_id}%20",
    ]


def test_malformed_job_ids_are_404(lab: LabClient, store: JobStore) -> None:
    """A path that is not a job id never reaches the store: 404 like an unknown id, never a 5xx
    (a job's other keys, `<id>:cells` and the like, would be read as its record)."""
    job_id = lab.submit(TINY)["id"]
    lab.wait(job_id, timeout=60)
    store.redis.set(keys.lease(job_id, "plan"), "worker")  # as while a worker plans it
    store.redis.set(keys.cancel(job_id), "1")
    try:
        for bad in _malformed_ids(job_id):
            for method, path in [
                ("GET", "/v1/jobs/{id}"),
                ("GET", "/v1/jobs/{id}/results"),
                ("GET", "/v1/jobs/{id}/plot.png"),
                ("GET", "/v1/jobs/{id}/events"),
                ("POST", "/v1/jobs/{id}/cancel"),
                ("DELETE", "/v1/jobs/{id}"),
            ]:
                response = lab.http.request(method, path.format(id=bad))
                assert response.status_code == 404, (method, path, bad[:80], response.text)
                assert "no job" in response.json()["detail"]
    finally:
        store.redis.delete(keys.lease(job_id, "plan"), keys.cancel(job_id))
    assert lab.status(job_id)["status"] == "succeeded"  # nothing was changed


@pytest.mark.fast
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/jobs", "GET, POST"),
        ("PUT", "/v1/jobs/0123456789abcdef0123", "GET, DELETE"),
        ("GET", "/v1/jobs/0123456789abcdef0123/cancel", "POST"),
    ],
)
def test_405_names_every_method_of_the_path(
    app: AppClient, method: str, path: str, allowed: str
) -> None:
    response = app.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed  # not only those of the first route that matched
    assert response.json() == {"detail": "Method Not Allowed"}
