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
