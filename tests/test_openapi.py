"""The committed OpenAPI document is the app's, and every route is documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobmodel.settings import Settings
from service.main import create_app

pytestmark = pytest.mark.fast

COMMITTED = Path(__file__).parents[1] / "openapi" / "openapi.json"


def current() -> str:
    # Exactly what `bolab openapi > openapi/openapi.json` writes.
    return json.dumps(create_app(Settings()).openapi(), sort_keys=True, indent=2) + "\n"


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == current(), (
        "openapi/openapi.json is stale: run `bolab openapi > openapi/openapi.json`"
    )


def test_every_route_is_documented() -> None:
    doc = create_app(Settings()).openapi()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("description"), f"{where}: no summary/description"
            assert {"200", "202", "204"} & set(op["responses"]), f"{where}: no success answer"
            if "{job_id}" in path:
                assert "404" in op["responses"], f"{where}: 404 undocumented"
    for name, schema in doc["components"]["schemas"].items():
        if name in {"JobSpec", "JobAccepted", "JobView", "JobPage", "JobResult", "Health"}:
            assert schema.get("examples"), f"{name}: no example"


def test_the_api_process_does_not_import_torch() -> None:
    code = "import sys, service.main; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
