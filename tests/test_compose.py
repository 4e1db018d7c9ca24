"""docker-compose.yml parses, and every command it runs is a real `bolab` verb and options."""

from __future__ import annotations

import os
import re
import subprocess
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
    # Every metric the dashboard queries is one the API exports (names from service.prometheus).
    from service.prometheus import COUNTERS, HISTOGRAMS

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


def test_redis_is_capped_like_bolab_up() -> None:
    """Compose's Redis has a maxmemory (never evicting), from the same variable and with the
    same default as the Redis `bolab up` starts."""
    from jobmodel.settings import Settings

    command = compose()["services"]["redis"]["command"]
    cap = command[command.index("--maxmemory") + 1]
    default = Settings.model_fields["redis_maxmemory"].default
    assert cap == f"${{BOLAB_REDIS_MAXMEMORY:-{default}}}"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


MONITORING_CREDENTIALS = {
    "flower": {"FLOWER_BASIC_AUTH": "BOLAB_FLOWER_BASIC_AUTH"},
    "grafana": {
        "GF_SECURITY_ADMIN_USER": "BOLAB_GRAFANA_ADMIN_USER",
        "GF_SECURITY_ADMIN_PASSWORD": "BOLAB_GRAFANA_ADMIN_PASSWORD",
    },
}


@pytest.mark.parametrize(("name", "credentials"), MONITORING_CREDENTIALS.items())
def test_monitoring_logins_come_from_env_with_no_default(name: str, credentials: dict) -> None:
    """Flower and Grafana take their logins from BOLAB_* variables, with nothing to fall back
    on in the file, and start through the check that refuses them when empty."""
    service = compose()["services"][name]
    for inside, outside in credentials.items():
        assert service["environment"][inside] in (f"${{{outside}}}", f"${{{outside}:-}}")
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["sh", "/deploy/require-env.sh"]
    checked = entrypoint[3 : entrypoint.index("--")]
    assert set(checked) == set(credentials)
    assert all(outside in entrypoint[2] for outside in credentials.values())  # the hint
    assert "./deploy/require-env.sh:/deploy/require-env.sh:ro" in service["volumes"]


def test_grafana_has_no_anonymous_access() -> None:
    environment = compose()["services"]["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in environment


@pytest.mark.parametrize("name", ["flower", "prometheus", "grafana"])
def test_monitoring_ports_bind_to_loopback_by_default(name: str) -> None:
    for port in compose()["services"][name]["ports"]:
        assert port.startswith("${BOLAB_MONITORING_BIND:-127.0.0.1}:"), port


def _require_env(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = ROOT / "deploy" / "require-env.sh"
    argv = ["sh", str(script), "set BOLAB_X and BOLAB_Y", "X", "Y", "--", "echo", "started"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize(
    ("env", "missing"), [({}, "X Y"), ({"X": "u:p"}, "Y"), ({"X": "u:p", "Y": ""}, "Y")]
)
def test_require_env_refuses_to_start_without_credentials(env: dict, missing: str) -> None:
    done = _require_env({"PATH": os.environ["PATH"], **env})
    assert done.returncode == 1 and "started" not in done.stdout
    assert f"empty: {missing})" in done.stderr and "set BOLAB_X and BOLAB_Y" in done.stderr


def test_require_env_runs_the_command_with_credentials() -> None:
    done = _require_env({"PATH": os.environ["PATH"], "X": "u:p", "Y": "secret"})
    assert done.returncode == 0 and done.stdout == "started\n", done.stderr
