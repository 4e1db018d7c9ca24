"""Limits and hostile input: in-process apps, and real uvicorn APIs where the socket matters.

Bodies over the size limit: 413 before parsing. Jobs over a bound: 422 naming the bound (and the
estimate, for cost and memory), answered fast because the grid is never expanded. Per key: at
most BOLAB_MAX_ACTIVE_JOBS queued+running jobs, then 429 with Retry-After.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from bolab.client import LabClient
from bolab.stack import ApiServer, RedisServer
from jobmodel.settings import Settings
from tests.helpers import TINY
from tests.inprocess import AppClient, app_client

pytestmark = pytest.mark.timeout(120)


def _detail(response: httpx.Response) -> str:
    return json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({**TINY, "n": 1_000_000}, ["n = 1e+06", "max_n = 5000"]),
        ({**TINY, "d": 10**400}, ["d = a huge number", "max_d"]),
        ({**TINY, "grid": {"d": [40, 10**30]}}, ["max_d"]),
        ({**TINY, "width": 1 << 20}, ["max_width"]),
        ({**TINY, "n_test": 10**9}, ["max_n_test"]),
        ({**TINY, "seeds": 10**6}, ["max_seeds"]),
        ({**TINY, "max_steps": 10**12}, ["max_steps"]),
        ({**TINY, "seed": 10**40}, ["seed = 1e+40 is over the bound max_seed"]),
        ({"n": 20, "grid": {"d_over_n": [1e308]}}, ["d_over_n", "max_d"]),
        (
            {**TINY, "grid": {"seed": list(range(300)), "gamma": [0.1] * 300, "n": [20] * 300}},
            ["27000000 cells", "max_cells = 10000"],
        ),
        (
            {"n": 5000, "d": 100_000, "width": 4096},
            ["estimated work 1.8e+16 units", "max_cost = 1e+15"],
        ),
        (
            {
                "n": 5000,
                "d": 100_000,
                "width": 4096,
                "seeds": 8,
                "max_steps": 1,
                "n_test": 1,
                "max_margin_baseline": False,
            },
            ["estimated peak memory of one batch 1.63e+10 bytes", "max_batch_bytes = 8.59e+09"],
        ),
        (
            {"n": 5000, "d": 1250, "width": 512, "max_steps": 1, "max_margin_baseline": False},
            ["uninterruptible stage (a GD step", "2.25e+10 units", "max_stage_work = 1e+10"],
        ),
        (
            {"n": 2000, "d": 4000, "max_steps": 1},
            ["uninterruptible stage", "9.6e+10 units", "max_stage_work", "max_margin_baseline"],
        ),
        (
            {**TINY, "record_every": 1, "max_steps": 10**6},
            ["trajectory points per run 1e+06", "max_trajectory_points = 1e+04"],
        ),
        (
            {**TINY, "seeds": 1000, "grid": {"gamma": [0.1] * 100}},
            ["estimated result size 7.02e+07 bytes", "max_result_bytes = 6.71e+07"],
        ),
        (
            {
                "n": 5000,
                "d": 100_000,
                "width": 4096,
                "seeds": 8,
                "grid": {"alpha": [0.1 + i / 1e5 for i in range(10_000)]},
            },
            ["estimated work", "max_cost", "estimated peak memory", "max_batch_bytes"],
        ),
        # Numbers in any JSON spelling: strings, floats, exponents, inside grids.
        ({**TINY, "n": "6000"}, ["n = 6000 is over the bound max_n = 5000"]),
        ({**TINY, "n": 6000.0}, ["n = 6000 is over the bound max_n = 5000"]),
        ({**TINY, "grid": {"n": ["6e3"]}}, ["n = 6000 is over the bound max_n = 5000"]),
        ({**TINY, "seeds": " 2000 "}, ["seeds = 2000 is over the bound max_seeds = 1000"]),
        ({**TINY, "grid": {"max_steps": ["100000000000"]}}, ["max_steps = 1e+11", "max_steps"]),
        ({**TINY, "seed": "1e40"}, ["seed = 1e+40 is over the bound max_seed"]),
    ],
    ids=lambda v: "" if isinstance(v, list) else None,
)
@pytest.mark.fast
def test_over_a_bound_is_422_naming_it(app: AppClient, spec: dict, named: list[str]) -> None:
    response = app.post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    for words in named:
        assert words in _detail(response)


@pytest.mark.fast
def test_exponent_spelling_is_bounded_too(app: AppClient) -> None:
    body = b'{"n": 6e3, "d": 40, "width": 16, "max_steps": 10, "n_test": 10}'
    response = app.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "n = 6000 is over the bound max_n = 5000" in _detail(response)


@pytest.mark.fast
def test_bounds_hold_after_coercion_whatever_the_precheck_sees() -> None:
    """The resolved cells are checked again: a spelling the raw precheck cannot read as a
    number is still bounded by the values the engine would use."""
    from bo_engine.spec import JobSpec
    from jobmodel.settings import Settings
    from service.limits import violations

    spec = JobSpec.model_validate({**TINY, "grid": {"n": ["6000"], "seeds": [1, "1001"]}})
    found = violations(spec, Settings())
    assert any("n = 6000 is over the bound max_n" in v for v in found)
    assert "seeds = 1001 is over the bound max_seeds = 1000" in found


@pytest.mark.fast
def test_paper_examples_are_within_the_bounds() -> None:
    from bo_engine.spec import JobSpec
    from jobmodel.settings import Settings
    from service.limits import violations

    for name in ("paper_gamma", "paper_heatmap"):
        with open(f"examples/{name}.json") as spec:
            assert violations(JobSpec.model_validate(json.load(spec)), Settings()) == []


@pytest.mark.fast
def test_body_over_the_limit_is_413(redis_server: RedisServer) -> None:
    headers = {"content-type": "application/json"}
    big = json.dumps({**TINY, "grid": {"gamma": [0.1] * 2000}}).encode()
    assert len(big) > 4096
    with app_client(Settings(redis_url=redis_server.url, max_body_bytes=4096)) as app:
        response = app.post("/v1/jobs", content=big, headers=headers)
        assert response.status_code == 413
        assert "larger than 4096 bytes" in response.json()["detail"]
        # no Content-Length (chunked upload): counted as it arrives
        chunks = [big[i : i + 1000] for i in range(0, len(big), 1000)]

        async def chunked() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        response = app.post("/v1/jobs", content=chunked(), headers=headers)
        assert response.status_code == 413


def test_lying_content_length_is_413_without_reading(idle_lab: ApiServer) -> None:
    host, port = idle_lab.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 999999999\r\n\r\n{"
        )
        assert sock.recv(200).startswith(b"HTTP/1.1 413")


def test_active_jobs_cap_is_429_with_retry_after(idle_lab: ApiServer, api_keys: dict) -> None:
    alice = LabClient(idle_lab.url, api_key=api_keys["alice"])
    bob = LabClient(idle_lab.url, api_key=api_keys["bob"])
    with alice, bob:
        ids = [alice.submit({**TINY, "seed": i})["id"] for i in range(3)]  # no worker: queued
        response = alice.http.post("/v1/jobs", json=TINY)
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert "3 jobs of 'alice' are queued or running" in response.json()["detail"]
        assert bob.http.post("/v1/jobs", json=TINY).status_code == 202  # per key
        alice.cancel(ids[0])  # a finished (cancelled) job frees a slot
        assert alice.http.post("/v1/jobs", json=TINY).status_code == 202
        assert alice.http.post("/v1/jobs", json=TINY).status_code == 429


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b'{"n": 1e308, "d": 40}', "application/json", "n"),
        (b'{"n": 20, "d": 40, "gamma": Infinity}', "application/json", "gamma"),
        (b'{"n": 20, "d": 40, "grid": {"gamma": [NaN]}}', "application/json", "gamma"),
        (b'{"n": 20, "d": 40, "theory": {"benign_gamma_n": 1, "x": 2}}', "application/json", "x"),
        (b'{"n": 20, "d": 40, "grid": {"n": [[[[[[20]]]]]]}}', "application/json", "grid"),
        (b'{"n": 20, "d": 40, "grid": {"n": 5}}', "application/json", "grid"),
        (b'{"n": 20, "d": 40, "grid": [1, 2]}', "application/json", "grid"),
        (b'{"n": 20, "d": 40}', "application/xml", "JSON"),
        (b"<spec n='20'/>", "application/xml", ""),
        (b'{"n": 20, "d": 40}', "", ""),
    ],
)
@pytest.mark.fast
def test_more_hostile_bodies_are_4xx_with_a_message(
    app: AppClient, body: bytes, content_type: str, words: str
) -> None:
    response = app.post("/v1/jobs", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert words in _detail(response)
