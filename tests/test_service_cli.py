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


def test_submit_dry_run_prints_the_estimate_and_submits_nothing(
    lab: LabClient, spec_file: Path
) -> None:
    url = str(lab.http.base_url).rstrip("/")
    before = len(lab.list(limit=200)["items"])
    code, out, err = bolab("submit", str(spec_file), "--dry-run", "--url", url)
    assert code == 0, err
    found = lab.estimate(spec_file)  # earlier tests of the session lab may have cached runs
    cached, to_train = found["runs_cached"], found["runs_to_train"]
    assert found["runs"] == 4 == cached + to_train and found["violations"] == []
    assert "estimate (nothing submitted)" in out and f"4 ({cached} / {to_train})" in out
    assert len(lab.list(limit=200)["items"]) == before


def test_summary_table_shows_the_test_error_interval() -> None:
    from rich.console import Console

    from bolab.service_cli import summary_table

    row = {"n": 20, "d": 40, "gamma": 0.1, "test_error_mean": 0.2,
           "test_error_ci95_lo": 0.125, "test_error_ci95_hi": 0.275, "runs": 3}
    console = Console(width=300, record=True)
    console.print(summary_table({"id": "x", "status": "succeeded", "summary": [row]}))
    text = console.export_text()
    assert "95 % interval" in text and "[0.125, 0.275]" in text
