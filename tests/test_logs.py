"""The JSON event lines are written at the level of the `log_level` setting the entry point was
given (`create_app(settings)` here), not at one read from the environment below it."""

from __future__ import annotations

import json

import pytest

from bolab.stack import RedisServer
from jobmodel.settings import Settings
from tests.helpers import TINY
from tests.inprocess import app_client

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]


def submitted(capfd: pytest.CaptureFixture[str], url: str, level: str) -> tuple[str, set[str]]:
    """Submit a job to an app whose log level is `level`: its id, and the ids of the
    `job.submitted` lines written meanwhile."""
    with app_client(Settings(redis_url=url, log_level=level)) as client:
        accepted = client.post("/v1/jobs", json=TINY)
    assert accepted.status_code == 202, accepted.text
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    return accepted.json()["id"], {e["job_id"] for e in lines if e["event"] == "job.submitted"}


def test_event_lines_follow_the_apps_log_level(
    redis_server: RedisServer, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOLAB_LOG_LEVEL", "INFO")  # the setting decides, not the environment
    job_id, seen = submitted(capfd, redis_server.url, "warning")
    assert job_id not in seen
    job_id, seen = submitted(capfd, redis_server.url, "INFO")
    assert job_id in seen


def test_an_unknown_log_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log_level"):
        Settings(log_level="loud")
