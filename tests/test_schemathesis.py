"""Schemathesis against the committed openapi/openapi.json on a live uvicorn API with keys.

Every check schemathesis has, in every phase: explicit examples, coverage (boundary and
negative values of every parameter), fuzzing (each operation alone, with a valid key and
without one), and stateful (sequences that follow the document's links: submit, then read,
cancel, follow, delete the job that was made). No 5xx, every response conforms to the document
(status codes, content types, headers, body schemas), schema-valid requests are accepted and
invalid ones refused, a deleted job is gone. Generated cases are counted; at least 500 run. The
API has its own Redis and no worker, so accepted jobs only queue (the per-job bounds turn huge
generated specs into 422 before anything is built).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks

from bolab.stack import ApiServer
from tests.helpers import TINY, keyed_api_on_own_redis

pytestmark = pytest.mark.timeout(600)

# Every check at its defaults, but one: a JobSpec has rules JSON Schema cannot state (n given at
# top level or as an axis, estimated cost and memory under the deployment's bounds), and a
# notify_url is refused where webhooks are off; the document says these answer 422.
CONFIG = schemathesis.Config.from_str(
    """
[[operations]]
include-name = "POST /v1/jobs"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"
]
"""
)
SCHEMA = schemathesis.openapi.from_path(
    Path(__file__).parents[1] / "openapi" / "openapi.json", config=CONFIG
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")
EXAMPLES = 30  # fuzzing cases per operation and auth mode (operations with few inputs run fewer)
SCENARIOS = 50  # stateful sequences, each of several linked calls
SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same cases every run: CI failures reproduce
    suppress_health_check=list(HealthCheck),
)
# A failing sequence is reported as found: shrinking replays whole sequences against the live
# API, minutes for a report that already holds a curl line per request.
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
_cases = {"with key": 0, "without key": 0, "stateful": 0}
_lock = threading.Lock()


def _count(mode: str) -> None:
    with _lock:
        _cases[mode] += 1


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory, lab_dir: Path) -> Iterator[ApiServer]:
    where = tmp_path_factory.mktemp("fuzz")
    with keyed_api_on_own_redis(where, lab_dir / "keys", BOLAB_MAX_ACTIVE_JOBS="100000") as api:
        yield api


@pytest.fixture(params=["with key", "without key"])
def auth(request: pytest.FixtureRequest, api_keys: dict[str, str]) -> tuple[str, dict]:
    key = {"Authorization": f"Bearer {api_keys['alice']}"} if request.param == "with key" else {}
    return request.param, key


def _excluded(case: schemathesis.Case) -> list:
    # /readyz answers a documented 503 here by design (no worker); the rest may never 5xx.
    return [checks.not_a_server_error] if case.path == "/readyz" else []


def _keep_auth_mode(case: schemathesis.Case) -> None:
    # A generated Authorization header would replace ours; keep the mode what it says.
    if case.headers:
        for name in [h for h in case.headers if h.lower() in ("authorization", "x-api-key")]:
            del case.headers[name]


def test_every_phase_is_on() -> None:
    """The configuration the tests below run under: no phase is left out."""
    phases = SCHEMA.config.phases
    assert all(getattr(phases, name).enabled for name in PHASES)
    links = Workflow._transitions.operations["POST /v1/jobs"].outgoing
    assert links, "no links: the stateful phase would do nothing"


@SCHEMA.parametrize()  # examples, coverage and fuzzing phases
@settings(SETTINGS, max_examples=EXAMPLES)
def test_api_conforms(case: schemathesis.Case, fuzz_api: ApiServer, auth: tuple) -> None:
    mode, headers = auth
    _keep_auth_mode(case)
    case.call_and_validate(  # checks=None: every check schemathesis has
        base_url=fuzz_api.url, headers=headers, excluded_checks=_excluded(case), timeout=30
    )
    _count(mode)


class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
    """Sequences along the document's links, as alice."""

    url = ""
    headers: dict[str, str] = {}
    store: redis.Redis | None = None

    def setup(self) -> None:
        # Every scenario starts from the same store: what a step draws from the responses
        # before it (the job list, say) is then the same whenever Hypothesis replays it. Two
        # jobs, one queued and one cancelled, give the list's links real ids to follow (a
        # generated spec is mostly over some bound, so few scenarios create a job).
        assert self.store is not None
        self.store.flushdb()
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as http:
            for _ in range(2):
                job = http.post("/v1/jobs", json=TINY).raise_for_status().json()
            http.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()

    def before_call(self, case: schemathesis.Case) -> None:
        _keep_auth_mode(case)
        if case.path.endswith("/events"):
            # A queued job's event stream lasts until the job ends, and no worker runs here:
            # end it first so that the stream (status, then end) closes.
            job = case.path_parameters.get("job_id", "")
            httpx.post(f"{self.url}/v1/jobs/{job}/cancel", headers=self.headers, timeout=30)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"base_url": self.url, "headers": self.headers, "timeout": 30}

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        super().after_call(response, case)  # recorded: the stateful checks look back
        _count("stateful")


def test_stateful(fuzz_api: ApiServer, api_keys: dict[str, str]) -> None:
    Workflow.url = fuzz_api.url
    Workflow.headers = {"Authorization": f"Bearer {api_keys['alice']}"}
    with redis.Redis.from_url(fuzz_api.env["BOLAB_REDIS_URL"]) as store:
        Workflow.store = store
        Workflow.run(
            settings=settings(
                SETTINGS, max_examples=SCENARIOS, stateful_step_count=8, phases=NO_SHRINK
            )
        )


def test_enough_cases_ran() -> None:
    """Runs after the tests above (file order): the fuzzing was not vacuous."""
    if not all(_cases.values()):
        pytest.skip("run with the fuzz tests")
    assert sum(_cases.values()) >= 500, _cases
    print(f"schemathesis cases: {_cases}")
