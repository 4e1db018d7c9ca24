"""A small typed client of the lab service's REST API (the `bolab` CLI goes through it).

    with LabClient("http://127.0.0.1:8000") as lab:
        job = lab.submit({"n": 50, "d": 100, "seeds": 2})
        lab.wait(job["id"])
        result = lab.results(job["id"])

Only httpx: a laptop with this package and no torch can drive a remote lab.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, NotRequired, TypedDict

import httpx

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Progress(TypedDict):
    runs_done: int
    runs_cached: NotRequired[int]  # of runs_done, those taken from the lab's run cache
    runs_total: int
    fraction: float
    batches_done: int
    batches_total: int | None
    round: NotRequired[int | None]  # an adaptive job: the round planned last (null: none yet)
    runs_bound: NotRequired[int | None]  # an adaptive job: its budget of runs (= runs_total)


class Job(TypedDict, total=False):
    id: str
    status: str
    owner: str
    queue: str
    progress: Progress
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    spec: dict[str, Any]
    summary: list[dict[str, Any]]
    links: dict[str, str]


class Event(TypedDict):
    """One Server-Sent Event of a job: `event` is status, progress, cell or end."""

    id: str
    event: str
    data: dict[str, Any]


class JobPage(TypedDict):
    items: list[Job]
    next_cursor: str | None


class LabError(Exception):
    """The service answered an error: `status_code` and its `detail` (a string or a list)."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def default_url() -> str:
    return os.environ.get("BOLAB_URL", DEFAULT_URL)


class LabClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        """`api_key` (default: env BOLAB_API_KEY) is sent as `Authorization: Bearer KEY`."""
        sent = dict(headers or {})
        api_key = api_key or os.environ.get("BOLAB_API_KEY")
        if api_key:
            sent.setdefault("Authorization", f"Bearer {api_key}")
        self.http = httpx.Client(base_url=base_url or default_url(), timeout=timeout, headers=sent)

    def __enter__(self) -> LabClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            self._call_failed(response)
        return response

    @staticmethod
    def _call_failed(response: httpx.Response) -> NoReturn:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        raise LabError(response.status_code, detail)

    def submit(
        self,
        spec: Mapping[str, Any] | str | Path,
        *,
        idempotency_key: str | None = None,
        notify_url: str | None = None,
    ) -> Job:
        """Submit a JobSpec (a mapping, or the path of a JSON file); returns id, status, links.
        With `idempotency_key`, retrying the same submission returns the same job; with
        `notify_url`, the service POSTs the job's summary there when it ends (a webhook)."""
        if isinstance(spec, str | Path):
            spec = json.loads(Path(spec).read_text())
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"notify_url": notify_url} if notify_url else {}
        return self._call(
            "POST", "/v1/jobs", json=dict(spec), headers=headers, params=params
        ).json()

    def estimate(self, spec: Mapping[str, Any] | str | Path) -> dict[str, Any]:
        """What a JobSpec would take, without submitting it (POST /v1/jobs?dry_run=true):
        cells, runs, runs_cached, runs_to_train, gd_steps [lo, hi], seconds {"cpu": [lo, hi],
        "gpu": [lo, hi] or None}, peak_batch_bytes and violations (each bound it would break)."""
        if isinstance(spec, str | Path):
            spec = json.loads(Path(spec).read_text())
        params = {"dry_run": "true"}
        return self._call("POST", "/v1/jobs", json=dict(spec), params=params).json()

    def status(self, job_id: str) -> Job:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def list(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", "/v1/jobs", params=params).json()

    def results(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/results").json()

    def results_text(self, job_id: str, format: Literal["json", "csv"] = "json") -> str:
        return self._call("GET", f"/v1/jobs/{job_id}/results", params={"format": format}).text

    def results_parquet(self, job_id: str) -> bytes:
        """One row per run, as a Parquet file (501 where the API has no pyarrow)."""
        params = {"format": "parquet"}
        return self._call("GET", f"/v1/jobs/{job_id}/results", params=params).content

    def frame(self, job_id: str, rows: Literal["cells", "runs"] = "cells") -> pd.DataFrame:
        """The results as a pandas DataFrame: one row per cell (the CSV's columns) or one row
        per run (the Parquet answer's typed columns). Needs `pip install 'bolab[frames]'`."""
        try:
            import pandas as pd
        except ImportError as missing:
            raise ImportError("LabClient.frame needs pandas: pip install 'bolab[frames]'") from (
                missing
            )
        if rows == "runs":
            return pd.read_parquet(io.BytesIO(self.results_parquet(job_id)))
        if rows == "cells":
            return pd.read_csv(io.StringIO(self.results_text(job_id, "csv")))
        raise ValueError(f"rows must be 'cells' or 'runs', not {rows!r}")

    def plot(self, job_id: str) -> bytes:
        return self._call("GET", f"/v1/jobs/{job_id}/plot.png").content

    def cancel(self, job_id: str) -> Job:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def delete(self, job_id: str) -> None:
        """Delete a finished job and everything stored for it (409 while it is active)."""
        self._call("DELETE", f"/v1/jobs/{job_id}")

    def rows(self, job_id: str) -> list[dict[str, Any]]:
        """The results as a table without pandas: one dict per cell, from the CSV (numbers as
        int or float, empty fields as None)."""
        reader = csv.DictReader(io.StringIO(self.results_text(job_id, "csv")))
        return [{k: _number(v) for k, v in row.items()} for row in reader]

    def events(
        self, job_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[Event]:
        """The job's Server-Sent Events, oldest first (or after `last_event_id`), until `end`.

        A dropped connection is resumed from the last event seen (`Last-Event-ID`), so nothing
        is lost or repeated. TimeoutError once `timeout` seconds pass without the end.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last, drops = last_event_id, 0
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            read = self.http.timeout.read or 30.0
            if deadline is not None:
                read = max(0.05, min(read, deadline - time.monotonic()))
            try:
                with self.http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self.http.timeout.connect, read=read),
                ) as response:
                    if response.is_error:
                        response.read()
                        self._call_failed(response)
                    for event in _parse_sse(response.iter_lines(), deadline):
                        last = event["id"]
                        drops = 0
                        yield event
                        if event["event"] == "end":
                            return
            except (httpx.TransportError, _Beat) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {job_id} did not end within {timeout} s") from exc
                if isinstance(exc, httpx.TransportError):
                    drops += 1
                    if drops > 5:
                        raise
                    time.sleep(min(0.2 * drops, 1.0))
                continue

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        max_interval: float = 0.5,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Follow the job's event stream until it ends; returns its final status.

        `on_update` sees the job at the start and after every event (status and progress kept
        current). TimeoutError if it takes longer than `timeout`. A server without the event
        route is polled instead, every `max_interval` seconds at most.
        """
        job = self.status(job_id)
        if on_update is not None:
            on_update(job)
        if job["status"] in TERMINAL:
            return job
        try:
            for event in self.events(job_id, timeout=timeout):
                data = event["data"]
                if event["event"] == "status":
                    job["status"] = data["status"]
                elif event["event"] == "progress":
                    job["progress"] = {**job["progress"], **data}
                elif event["event"] == "cell":
                    job["summary"] = [*(job.get("summary") or []), data]
                if on_update is not None and event["event"] != "end":
                    on_update(job)
        except LabError as exc:
            if exc.status_code != 404:
                raise
            return self._poll(job_id, timeout, max_interval, on_update)
        job = self.status(job_id)
        if on_update is not None:
            on_update(job)
        return job

    def _poll(
        self,
        job_id: str,
        timeout: float | None,
        max_interval: float,
        on_update: Callable[[Job], None] | None,
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.02  # start fast (tiny jobs finish in well under a second), back off
        while True:
            job = self.status(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(interval)
            interval = min(interval * 1.5, max_interval)


class _Beat(Exception):
    """The deadline passed while the stream was idle (raised between keep-alives)."""


def _parse_sse(lines: Iterator[str], deadline: float | None) -> Iterator[Event]:
    """Events from SSE lines (`id:`, `event:`, `data:`; blank line ends one; `:` comments)."""
    fields: dict[str, str] = {}
    for line in lines:
        if deadline is not None and time.monotonic() >= deadline:
            raise _Beat
        if not line:
            if "data" in fields:
                yield Event(
                    id=fields.get("id", ""),
                    event=fields.get("event", "message"),
                    data=json.loads(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)
