"""docker-compose.yml parses, and every command it runs is a real `bolab` verb and options."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from bolab.cli import app

ROOT = Path(__file__).parents[1]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_redis_durability() -> None:
    services = compose()["services"]
    assert {"redis", "api", "worker-cpu", "worker-gpu"} <= set(services)
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "healthcheck" in redis
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert "BOLAB_REDIS_URL" in services[name]["environment"]


def _bolab_commands() -> list[tuple[str, list[str]]]:
    found = [
        (name, service["command"])
        for name, service in compose()["services"].items()
        if service.get("command") and service["command"][0] == "bolab"
    ]
    assert {name for name, _ in found} >= {"api", "worker-cpu", "worker-gpu"}
    return found


@pytest.mark.parametrize(("service", "command"), _bolab_commands())
def test_commands_are_bolab_verbs(service: str, command: list[str]) -> None:
    group = typer.main.get_command(app)  # a click-style group (typer may vendor click)
    verb, *args = command[1:]
    assert verb in group.commands, f"{service}: `bolab {verb}` is not a verb"
    # Substitute compose's ${VAR:-default} with its default, then let click parse the options.
    args = [re.sub(r"\$\{[^:}]+:-([^}]*)\}", r"\1", a) for a in args]
    group.commands[verb].make_context(verb, args)  # raises on an unknown option or bad value


def test_monitoring_profile() -> None:
    """Flower runs Celery's own `flower` command on the lab's broker; Prometheus scrapes the
    API's /metrics; Grafana gets its datasource and a dashboard of bolab metrics from deploy/."""
    services = compose()["services"]
    for name in ("flower", "prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    flower = services["flower"]["command"]
    assert flower[0] == "celery" and "flower" in flower
    assert any(arg.startswith("--broker=${BOLAB_REDIS_URL") for arg in flower)
    mounts = services["prometheus"]["volumes"] + services["grafana"]["volumes"]
    for mount in mounts:
        source = mount.split(":")[0]
        assert not source.startswith("./") or (ROOT / source).exists(), source
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["static_configs"][0]["targets"] == [
        "api:8000"
    ]
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "bolab.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    # Every metric the dashboard queries is one the API exports (names from service.metrics).
    from service.metrics import COUNTERS, HISTOGRAMS

    exported = {"bolab_jobs", "bolab_queue_depth", "bolab_workers", "bolab_jobs_running"}
    exported |= {f"bolab_{n}" for n, *_ in COUNTERS} | {f"bolab_{n}_bucket" for n, *_ in HISTOGRAMS}
    exported |= {"bolab_http_requests_total", "bolab_http_request_duration_seconds_bucket"}
    used = set(re.findall(r"bolab_[a-z_]+", exprs))
    assert used <= exported, used - exported
    for wanted in (
        "bolab_jobs",
        "bolab_queue_depth",
        "bolab_gd_steps_total",
        "bolab_job_duration_seconds_bucket",
        "bolab_run_duration_seconds_bucket",
    ):
        assert wanted in used
