"""Prometheus metrics at `/metrics`: HTTP traffic of this API process, and the lab's state.

Two sources, one registry:
- HTTP requests and latency are per API process (ordinary prometheus-client metrics, fed by an
  ASGI middleware; Prometheus scrapes every API replica and sums).
- Everything about jobs, runs and workers comes from Redis at scrape time (`LabCollector`):
  counters and histograms that workers and the API add to there (`jobmodel.counters`, so several
  worker processes on several hosts add to one number that survives restarts), and gauges
  computed from the job store and the broker's queue lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobmodel import counters as shared
from jobmodel.settings import Settings
from jobmodel.store import JobStatus, JobStore

NS = "bolab"


class LabCollector(Collector):
    """Reads the lab's numbers from the job store on every scrape (a few pipelined calls)."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._gauges()
            yield from self._counters()
            yield from self._histograms()
        except redis.RedisError:
            # No lab numbers this scrape; `bolab_up` says why (the HTTP metrics still answer).
            yield GaugeMetricFamily(f"{NS}_redis_up", "job store answered", value=0)
            return
        yield GaugeMetricFamily(f"{NS}_redis_up", "job store answered", value=1)

    def _gauges(self) -> Iterator[Metric]:
        state = self.store.lab_state(self.settings.worker_ttl_s)
        jobs = GaugeMetricFamily(f"{NS}_jobs", "jobs in the store by status", labels=["status"])
        for status, count in state.jobs.items():
            jobs.add_metric([status.value], count)
        yield jobs
        yield GaugeMetricFamily(
            f"{NS}_jobs_running", "jobs running now", value=state.jobs[JobStatus.running]
        )
        yield _by_queue("queue_depth", "Celery tasks waiting in each queue", state.queue_depth)
        yield _by_queue(
            "workers", "live workers (recent heartbeat) serving each queue", state.workers
        )
        yield GaugeMetricFamily(
            f"{NS}_redis_memory_bytes",
            "memory Redis uses for its data (used_memory)",
            value=state.memory_used,
        )
        yield GaugeMetricFamily(
            f"{NS}_redis_maxmemory_bytes",
            "Redis's maxmemory limit; 0 = none (Redis then grows until the host runs out)",
            value=state.memory_max,
        )

    def _counters(self) -> Iterator[Metric]:
        values = self.store.counters()
        for name, help_text, labels in COUNTERS:
            family = CounterMetricFamily(
                f"{NS}_{name.removesuffix('_total')}", help_text, labels=labels
            )
            for label_text, value in sorted(values.get(name, {}).items()):
                parsed = shared.parse_labels(label_text)
                family.add_metric([parsed.get(k, "") for k in labels], value)
            yield family
        steps = values.get("gd_steps_total", {})
        seconds = values.get("train_seconds_total", {})
        rate = GaugeMetricFamily(
            f"{NS}_gd_steps_per_second",
            "GD steps (summed over runs) per second of batch training, since the store began; "
            "rate(bolab_gd_steps_total) / rate(bolab_train_seconds_total) for a recent window",
            labels=["queue"],
        )
        for label_text, total in sorted(steps.items()):
            wall = seconds.get(label_text, 0.0)
            rate.add_metric(
                [shared.parse_labels(label_text).get("queue", "")],
                total / wall if wall > 0 else 0.0,
            )
        yield rate

    def _histograms(self) -> Iterator[Metric]:
        for name, help_text, label in HISTOGRAMS:
            family = HistogramMetricFamily(f"{NS}_{name}", help_text, labels=[label])
            for label_text, parts in sorted(self.store.histogram(name).items()):
                bounds = [*(repr(b) for b in shared.HISTOGRAMS[name]), "+Inf"]
                running, buckets = 0.0, []
                for bound in bounds:  # stored per bucket; Prometheus wants cumulative counts
                    running += parts.get(bound, 0.0)
                    buckets.append((bound, running))
                value = shared.parse_labels(label_text).get(label, "")
                family.add_metric([value], buckets, parts.get("sum", 0.0))
            yield family


def _by_queue(name: str, help_text: str, values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(f"{NS}_{name}", help_text, labels=["queue"])
    for queue, count in values.items():
        family.add_metric([queue], count)
    return family


COUNTERS = (
    ("jobs_submitted_total", "jobs accepted by POST /v1/jobs", ["queue"]),
    ("jobs_finished_total", "jobs that reached a terminal status", ["status", "queue"]),
    (
        "runs_trained_total",
        "runs trained to their stop (a re-delivered batch counts again)",
        ["queue"],
    ),
    (
        "runs_cached_total",
        "runs taken from the run cache instead of trained (a re-delivered batch counts again)",
        ["queue"],
    ),
    ("gd_steps_total", "gradient-descent steps, summed over runs", ["queue"]),
    ("train_seconds_total", "wall seconds workers spent training batches", ["queue"]),
)
HISTOGRAMS = (
    ("run_duration_seconds", "seconds from a run's batch start to its cell's end", "queue"),
    ("job_duration_seconds", "seconds from submission to terminal status", "status"),
)


class HttpMetrics:
    """Pure ASGI middleware: requests and latency (to the response headers) by route template.

    Labels use the route's template (`/v1/jobs/{job_id}`), never the raw path, so ids do not
    make a new time series each; unmatched paths share one label. Latency stops at the response
    headers: for an SSE stream that is the time to connect, not the stream's length.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            f"{NS}_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{NS}_http_request_duration_seconds",
            "time to the response headers",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.requests.labels(method, route, str(status)).inc()
            self.latency.labels(method, route).observe(time.perf_counter() - started)

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        except Exception:
            record(500)
            raise


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Prometheus text format: jobs by status, queue depth, live workers, Redis "
    "memory in use and its limit, runs and GD steps, run and job durations (all from Redis, "
    "so every worker counts), and this API process's HTTP requests by route template and "
    "status.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """The HTTP middleware and `/metrics`; the lab collector joins in the lifespan (`live`)."""
    app.state.registry = CollectorRegistry()
    app.add_middleware(HttpMetrics, registry=app.state.registry)
    app.include_router(router)
