"""The client verbs of `bolab` against the live service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bolab.cli import app
from bolab.client import LabClient
from tests.helpers import TINY

pytestmark = pytest.mark.timeout(90)


def bolab(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**TINY, "grid": {"gamma": [0.05, 0.1]}}))
    return path


def test_submit_wait_prints_the_summary_table(lab: LabClient, spec_file: Path) -> None:
    url = str(lab.http.base_url).rstrip("/")
    code, out, _ = bolab("submit", str(spec_file), "--wait", "--url", url)
    assert code == 0, out
    assert "succeeded" in out and "test err" in out
    assert "0.05" in out and "0.1" in out  # one row per cell, keyed by the swept axis


def test_submit_status_results_cancel_delete(
    lab: LabClient, spec_file: Path, tmp_path: Path
) -> None:
    url = str(lab.http.base_url).rstrip("/")
    code, out, _ = bolab("submit", str(spec_file), "--url", url)
    assert code == 0
    job_id = out.strip()
    assert lab.wait(job_id, timeout=60)["status"] == "succeeded"

    code, out, _ = bolab("status", job_id, "--url", url, "--json")
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    code, out, _ = bolab("status", job_id, "--url", url)
    assert code == 0 and job_id in out and "4/4 runs" in out

    code, out, _ = bolab("results", job_id, "--url", url)
    assert code == 0 and len(json.loads(out)["cells"]) == 2
    csv_file = tmp_path / "out.csv"
    code, _, _ = bolab("results", job_id, "--url", url, "--format", "csv", "--out", str(csv_file))
    assert code == 0 and csv_file.read_text().startswith("index,")

    code, _, err = bolab("cancel", job_id, "--url", url)
    assert code == 1 and "409" in err  # it already succeeded

    code, out, _ = bolab("delete", job_id, "--url", url)
    assert code == 0 and out.strip() == f"{job_id} deleted"
    code, _, err = bolab("status", job_id, "--url", url)
    assert code == 1 and "404" in err


def test_errors_are_readable(lab: LabClient, tmp_path: Path) -> None:
    url = str(lab.http.base_url).rstrip("/")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "gamma": 1.5, "width": 3}))
    code, _, err = bolab("submit", str(bad), "--url", url)
    assert code == 1 and "gamma" in err and "width" in err
    code, _, err = bolab("status", "nope", "--url", url)
    assert code == 1 and "404" in err
    code, _, err = bolab("status", "nope", "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach" in err


def test_openapi_verb_prints_the_document() -> None:
    code, out, _ = bolab("openapi")
    assert code == 0
    assert out == (Path(__file__).parents[1] / "openapi" / "openapi.json").read_text()
