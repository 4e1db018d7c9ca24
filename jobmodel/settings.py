"""Settings of the lab service, read once from `BOLAB_*` environment variables.

One class for API, workers and `bolab up`, built once at each entry point and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOLAB_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="job store and Celery broker (one Redis)"
    )
    data_dir: Path = Field(Path(".bolab"), description="where `bolab up` keeps its Redis files")
    # Longer than the longest batch, or Redis re-delivers a batch that is still running.
    visibility_timeout_s: int = Field(6 * 3600, ge=60)
    progress_interval_s: float = Field(0.25, gt=0, description="min seconds between writes")
    cancel_poll_interval_s: float = Field(0.2, gt=0, description="min seconds between flag reads")
    worker_heartbeat_s: float = Field(2.0, gt=0)
    # A worker whose last heartbeat is older than this counts as gone (readyz, worker gauges).
    worker_ttl_s: float = Field(15.0, gt=0)

    # --- reliability and security (see service.auth, service.limits, worker.reaper) ---------
    api_keys: str = Field(
        "", description="'owner:role:sha256hex' entries, comma-separated (`bolab keys add`)"
    )
    keys_file: Path | None = Field(None, description="file of such entries, one per line")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies: 413")
    max_n: int = Field(5000, ge=2)
    max_d: int = Field(100_000, ge=1)
    max_width: int = Field(4096, ge=2)
    max_n_test: int = Field(100_000, ge=1)
    max_seeds: int = Field(1000, ge=1, description="seeds per cell")
    max_cells: int = Field(10_000, ge=1, description="grid cells per job")
    max_steps: int = Field(1_000_000_000, ge=1)
    # The cost model of bo_engine.cost: work in GEMM multiply-add units (about 8e9 a second on
    # one core here), memory in bytes. examples/paper_heatmap.json comes to about 1.4e14 units.
    max_cost: float = Field(1e15, gt=0, description="bound on the estimated work of a job (units)")
    max_batch_bytes: int = Field(
        8 << 30, ge=1, description="bound on the estimated peak memory of one batch (bytes)"
    )
    max_stage_work: float = Field(
        1e10,
        gt=0,
        description="bound on the costliest stage no cancel can interrupt: one GD step of a "
        "run, or its max-margin baseline's NNLS solve (units; about a second on one core)",
    )
    max_trajectory_points: int = Field(
        10_000, ge=2, description="bound on trajectory points per run (max_steps / record_every)"
    )
    max_result_bytes: int = Field(
        64 << 20, ge=1 << 16, description="bound on the estimated result document of a job"
    )
    max_parallel_runs: int = Field(
        8, ge=1, description="runs a CPU worker process trains at once (bounds its threads)"
    )
    max_active_jobs: int = Field(100, ge=1, description="queued+running jobs per key")
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)
    # A batch's lease lives this long unless its worker refreshes it (every third of it).
    lease_ttl_s: float = Field(15.0, ge=1)
    reaper_interval_s: float = Field(5.0, gt=0)
    # A delivered task with no lease for this long is held by a dead worker: requeue it.
    orphan_grace_s: float = Field(15.0, ge=1)
    max_attempts: int = Field(5, ge=1, description="deliveries of a batch before its job fails")
    batch_time_limit_s: float = Field(3600.0, ge=1, description="a batch running longer fails")

    # --- dashboards and people (see service.webhooks, service.prometheus) ------------------
    webhook_secret: str = Field(
        "",
        description="master key of webhook signatures: each owner signs with a key derived "
        "from it (`bolab keys webhook-secret OWNER`); empty = webhooks refused",
    )
    webhook_allowed_hosts: str = Field(
        "", description="comma-separated hosts notify_url may name ('*.lab.org' = subdomains)"
    )
    webhook_max_attempts: int = Field(5, ge=1, description="tries per webhook, then give up")
    webhook_backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles")
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="deadline of one delivery attempt: DNS, connect, send, answer"
    )
    webhook_poll_s: float = Field(0.5, gt=0, description="how often the API looks for due ones")
    sse_keepalive_s: float = Field(10.0, gt=0, description="SSE comment when nothing happens")

    # --- webhook delivery: targets, isolation, bounds (see service.webhook_targets) ---------
    webhook_allowed_ports: str = Field(
        "80,443",
        pattern=r"^\s*\d{1,5}\s*(,\s*\d{1,5}\s*)*$",
        description="comma-separated ports a notify_url may name; others: 422",
    )
    webhook_allow_private: bool = Field(
        False,
        description="deliver to hosts that resolve to private, loopback, link-local, multicast "
        "or reserved addresses (else such a delivery is refused)",
    )
    webhook_max_response_bytes: int = Field(
        64 * 1024, ge=1, description="a receiver's answer is read up to this, then dropped"
    )
    webhook_concurrency: int = Field(32, ge=1, description="deliveries in flight per API process")
    webhook_per_receiver: int = Field(
        2, ge=1, description="deliveries in flight to one scheme://host:port per API process"
    )
    # --- the embedded Redis of `bolab up` (see bolab.stack.RedisServer) ---------------------
    redis_maxmemory: str = Field(
        "2gb",
        pattern=r"^[0-9]+([kKmMgG][bB]?)?$",
        description="memory cap of the Redis `bolab up` starts (Redis units: 512mb, 2gb; 0 = "
        "none); when full it evicts nothing and submissions answer 503. docker-compose.yml "
        "reads the same variable",
    )
    # --- the HTTP edge: event stream caps, probes under load (see service.capacity) ---------
    max_streams_per_key: int = Field(
        10, ge=1, description="event streams one key may hold open per API process; more: 429"
    )
    max_streams: int = Field(
        100,
        ge=1,
        description="event streams per API process, all keys together; more: 503 (the streams' "
        "own Redis pool has this many connections, apart from the one short requests use)",
    )
    # Building results is Python work under the GIL: more threads add little throughput, and
    # each one more makes the event loop (probes, streams, every request) wait longer for it.
    max_result_renders: int = Field(
        1,
        ge=1,
        description="results and figures built at once per API process; more wait their turn "
        "(keeps the event loop and the shared thread pool free for every other request)",
    )

    # --- job lifecycle: deletion and retention (see jobmodel.store.JobStore.delete) ----------
    retention_days: float = Field(
        0.0,
        ge=0,
        description="delete terminal jobs that finished longer ago than this; 0 = keep forever",
    )

    # --- the run cache: runs trained once, served to every job that asks again -------------
    cache_scope: Literal["lab", "owner", "off"] = Field(
        "lab",
        description="who shares cached runs: the whole lab (runs are pure functions of public "
        "parameters), each owner apart, or nobody (off: every run trains)",
    )
