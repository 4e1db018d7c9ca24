"""The SSE event stream of a job (order, resume with Last-Event-ID, end after the final event)
and the structured JSON log lines of API and worker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bolab.client import Event, LabClient
from bolab.stack import ApiServer
from tests.helpers import TINY, eventually
from tests.test_service_jobs import SLOW_GRID

pytestmark = pytest.mark.timeout(120)


def _raw_stream(lab: LabClient, job_id: str, **headers: str) -> list[str]:
    """Every line of one SSE response, read until the server closes it."""
    with lab.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(response.iter_lines())


def _key(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e["id"], e["event"], json.dumps(e["data"], sort_keys=True)) for e in events]


def test_order_of_a_finished_job_and_resume(lab: LabClient) -> None:
    job_id = lab.submit({**TINY, "grid": {"gamma": [0.05, 0.2]}})["id"]
    events = list(lab.events(job_id, timeout=60))
    kinds = [e["event"] for e in events]

    assert kinds[:2] == ["status", "status"]
    assert [e["data"]["status"] for e in events[:2]] == ["queued", "running"]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    assert events[-1]["data"]["status"] == "succeeded"
    assert events[-1]["data"]["progress"] == {"runs_done": 4, "runs_total": 4, "fraction": 1.0}
    cells = [e["data"] for e in events if e["event"] == "cell"]
    assert sorted(c["index"] for c in cells) == [0, 1]
    assert (
        cells == lab.status(job_id)["summary"]
        or sorted(cells, key=lambda c: c["index"]) == lab.status(job_id)["summary"]
    )
    fractions = [e["data"]["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # Stream ids increase strictly: they are the Redis stream's own entry ids.
    ids = [tuple(map(int, e["id"].split("-"))) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # Resume after any event: exactly the rest, none lost, none repeated (header or query).
    for cut in (0, 2, len(events) - 2):
        rest = list(lab.events(job_id, last_event_id=events[cut]["id"], timeout=10))
        assert _key(rest) == _key(events[cut + 1 :])
    by_query = lab.http.get(f"/v1/jobs/{job_id}/events", params={"last_event_id": events[-2]["id"]})
    assert by_query.text.count("event: end") == 1 and "event: cell" not in by_query.text

    # The server closes the stream after the end event (the read returns), and a client that
    # resumes after the end gets an end again at once instead of hanging.
    lines = _raw_stream(lab, job_id)
    assert lines[0] == "retry: 1000"
    assert [line for line in lines if line.startswith("event:")][-1] == "event: end"
    again = _raw_stream(lab, job_id, **{"Last-Event-ID": events[-1]["id"]})
    assert "event: end" in again and "event: cell" not in again


def test_live_stream_dropped_and_resumed_without_loss(lab: LabClient) -> None:
    job_id = lab.submit(SLOW_GRID)["id"]
    seen: list[Event] = []
    stream = lab.events(job_id, timeout=60)
    for event in stream:  # the short cell finishes while the long one trains
        seen.append(event)
        if event["event"] == "cell":
            break
    stream.close()  # the connection drops mid-job
    assert seen[-1]["data"]["max_steps"] == 50
    assert lab.status(job_id)["status"] == "running"

    lab.cancel(job_id)
    rest = list(lab.events(job_id, last_event_id=seen[-1]["id"], timeout=30))
    assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "cancelled"
    everything = list(lab.events(job_id, timeout=10))
    assert _key(seen + rest) == _key(everything)


def test_wait_follows_events_and_errors(lab: LabClient) -> None:
    job_id = lab.submit(TINY)["id"]
    updates: list[tuple[str, float]] = []
    job = lab.wait(
        job_id,
        timeout=60,
        on_update=lambda j: updates.append((j["status"], j["progress"]["fraction"])),
    )
    assert job["status"] == "succeeded" and job["summary"]
    assert updates[-1] == ("succeeded", 1.0)
    assert ("running", 1.0) in updates or ("running", 0.5) in updates  # progress from events

    assert lab.http.get("/v1/jobs/0123456789abcdef0123/events").status_code == 404
    bad = lab.http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422
    # Past Redis's 64-bit ids: refused up front, not a stream broken after its first line.
    huge = "0-20000000000000000000"
    for where in ({"headers": {"Last-Event-ID": huge}}, {"params": {"last_event_id": huge}}):
        assert lab.http.get(f"/v1/jobs/{job_id}/events", **where).status_code == 422
    # Empty, as browsers' EventSource has it before the first event: from the start.
    fresh = _raw_stream(lab, job_id, **{"Last-Event-ID": ""})
    assert "event: status" in fresh and "event: end" in fresh
    with pytest.raises(TimeoutError):  # a job that does not end within the timeout
        slow = lab.submit(SLOW_GRID)["id"]
        try:
            lab.wait(slow, timeout=1.5)
        finally:
            lab.cancel(slow)


def _json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_json_log_lines_from_api_and_worker(lab: LabClient, lab_dir: Path) -> None:
    job_id = lab.submit(TINY)["id"]
    owner = lab.wait(job_id, timeout=60)["owner"]

    def lines(name: str, event: str) -> list[dict]:
        found = _json_lines(lab_dir / "logs" / name)
        return [x for x in found if x.get("job_id") == job_id and x.get("event") == event]

    submitted = eventually(lambda: lines("api.log", "job.submitted"), timeout=10)[0]
    assert submitted["owner"] == owner and submitted["level"] == "info"
    assert {"ts", "pid", "queue"} <= set(submitted)
    started = eventually(lambda: lines("worker.log", "batch.started"), timeout=10)[0]
    assert started["owner"] == owner and started["runs"] == 2
    ended = eventually(lambda: lines("worker.log", "job.finished"), timeout=10)[0]
    assert ended["status"] == "succeeded" and ended["owner"] == owner


def test_events_need_the_jobs_owner(secured_api: ApiServer, api_keys: dict[str, str]) -> None:
    """With keys configured, another owner's job answers 404 on its stream, like elsewhere."""
    url = secured_api.url
    with LabClient(url, api_key=api_keys["alice"]) as alice:
        job_id = alice.submit(TINY)["id"]
        with LabClient(url, api_key=api_keys["bob"]) as bob:
            assert bob.http.get(f"/v1/jobs/{job_id}/events").status_code == 404
        assert httpx.get(f"{url}/v1/jobs/{job_id}/events").status_code == 401
        assert list(alice.events(job_id, timeout=60))[-1]["event"] == "end"


def test_quiet_stream_outlives_the_redis_socket_timeout(
    idle_lab: ApiServer, api_keys: dict[str, str]
) -> None:
    """A job with no news for longer than redis-py's default 5 s socket timeout keeps its stream
    open: the API's blocking read waits out the keep-alive interval (10 s) and says so."""
    with LabClient(idle_lab.url, api_key=api_keys["alice"]) as client:
        job_id = client.submit(TINY)["id"]  # no worker here: the job stays queued and quiet
        lines: list[str] = []
        try:
            with client.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith(": keep-alive"):
                        break
        finally:
            client.cancel(job_id)
    assert lines[-1] == ": keep-alive", lines
