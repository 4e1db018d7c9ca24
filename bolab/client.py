"""A small typed client of the lab service's REST API (the `bolab` CLI goes through it).

    with LabClient("http://127.0.0.1:8000") as lab:
        job = lab.submit({"n": 50, "d": 100, "seeds": 2})
        lab.wait(job["id"])
        result = lab.results(job["id"])

Only httpx: a laptop with this package and no torch can drive a remote lab.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Progress(TypedDict):
    runs_done: int
    runs_total: int
    fraction: float
    batches_done: int
    batches_total: int | None


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
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url or default_url(), timeout=timeout, headers=dict(headers or {})
        )

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
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            raise LabError(response.status_code, detail)
        return response

    def submit(self, spec: Mapping[str, Any] | str | Path) -> Job:
        """Submit a JobSpec (a mapping, or the path of a JSON file); returns id, status, links."""
        if isinstance(spec, str | Path):
            spec = json.loads(Path(spec).read_text())
        return self._call("POST", "/v1/jobs", json=dict(spec)).json()

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

    def plot(self, job_id: str) -> bytes:
        return self._call("GET", f"/v1/jobs/{job_id}/plot.png").content

    def cancel(self, job_id: str) -> Job:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        max_interval: float = 0.5,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job ends; `on_update` sees every status read. TimeoutError if slow."""
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
