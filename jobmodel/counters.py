"""Counters and histograms that live in Redis, so every process adds to the same numbers.

Workers run on several machines and restart; a per-process Prometheus registry would report
numbers that differ per process and reset with it, and multiprocess mode needs one shared
directory, which separate hosts and containers do not have. The job store's Redis is shared by
all of them already, so workers (and the API) add with HINCRBY / HINCRBYFLOAT, and the API's
collector (`service.prometheus`) turns the hashes into Prometheus samples at scrape time.

Field layout (see `jobmodel.keys`): counters "name|k=v,k=v"; histograms, per metric, "k=v|le" for
the bucket an observation falls in (not cumulative: the collector sums), "k=v|sum", "k=v|count".
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import redis

from jobmodel import keys

# Upper bounds in seconds; a run of a tiny spec takes milliseconds, a paper sweep hours.
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
HISTOGRAMS = {"run_duration_seconds": RUN_BUCKETS, "job_duration_seconds": JOB_BUCKETS}

Client = redis.Redis | redis.client.Pipeline
Labels = Mapping[str, str]


def label_text(labels: Labels) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_labels(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if part)


def field(name: str, labels: Labels) -> str:
    """The counters hash field of counter `name` with these labels."""
    return f"{name}|{label_text(labels)}"


def inc(client: Client, name: str, labels: Labels, amount: float = 1) -> None:
    if isinstance(amount, int):
        client.hincrby(keys.METRIC_COUNTERS, field(name, labels), amount)
    else:
        client.hincrbyfloat(keys.METRIC_COUNTERS, field(name, labels), amount)


def observe(client: Client, name: str, labels: Labels, value: float, times: int = 1) -> None:
    """Add `times` observations of `value` to histogram `name` (one pipeline of three writes)."""
    buckets = HISTOGRAMS[name]
    i = bisect.bisect_left(buckets, value)
    le = repr(buckets[i]) if i < len(buckets) else "+Inf"
    base, key = label_text(labels), keys.metric_histogram(name)
    pipe = client.pipeline(transaction=False) if isinstance(client, redis.Redis) else client
    pipe.hincrby(key, f"{base}|{le}", times)
    pipe.hincrbyfloat(key, f"{base}|sum", value * times)
    pipe.hincrby(key, f"{base}|count", times)
    if pipe is not client:
        pipe.execute()


def counters(client: redis.Redis) -> dict[str, dict[str, float]]:
    """name -> {label text -> value}."""
    out: dict[str, dict[str, float]] = {}
    for field, value in client.hgetall(keys.METRIC_COUNTERS).items():
        name, labels = field.split("|", 1)
        out.setdefault(name, {})[labels] = float(value)
    return out


def histogram(client: redis.Redis, name: str) -> dict[str, dict[str, float]]:
    """label text -> {"0.1": n, ..., "+Inf": n, "sum": s, "count": c} (buckets not cumulative)."""
    out: dict[str, dict[str, float]] = {}
    for field, value in client.hgetall(keys.metric_histogram(name)).items():
        labels, part = field.rsplit("|", 1)
        out.setdefault(labels, {})[part] = float(value)
    return out
