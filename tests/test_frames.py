"""Results as Parquet and data frames: one row per run, typed columns, the same numbers as the
JSON result when read back through pandas and DuckDB; from the API, the CLI and `LabClient`."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bolab.cli import app as cli
from bolab.client import LabClient
from tests.helpers import TINY
from tests.inprocess import AppClient

GRID = {**TINY, "grid": {"gamma": [0.0, 0.2], "d_over_n": [1, 2]}}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    from bo_engine.runner import run_spec
    from bo_engine.spec import JobSpec

    return run_spec(JobSpec.model_validate(GRID))


@pytest.fixture
def stored_job(app: AppClient, result: dict[str, Any]) -> str:
    """A succeeded job whose cells are `result`'s, stored as a worker stores them."""
    from bo_engine.results import summary_rows

    store = app.app.state.store
    job = store.create(GRID, runs_total=8, cells_total=4, queue="cpu")
    for cell in result["cells"]:
        store.put_cell(job.id, cell, summary_rows([cell])[0])
    store.mark_succeeded(job.id, result["engine"])
    return job.id


def expected_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What every Parquet row must say, read straight off the JSON document."""
    return [
        {
            "index": cell["index"],
            "n": cell["params"]["n"],
            "d": cell["params"]["d"],
            "gamma": cell["params"]["gamma"],
            "seed": run["seed"],
            "test_error": run["test_error"],
            "steps": run["steps"],
            "interpolated": run["interpolated"],
            "stop_reason": run["stop_reason"],
            "max_margin_test_error": run["max_margin"]["test_error"],
            "max_margin_margin_ratio": run["max_margin"]["margin_ratio"],
            "theory_regime_hint": run["theory"]["regime_hint"],
        }
        for cell in result["cells"]
        for run in cell["runs"]
    ]


def check_frame(frame: Any, result: dict[str, Any]) -> None:
    expected = expected_rows(result)
    assert len(frame) == len(expected) == 8
    assert frame[list(expected[0])].to_dict("records") == expected
    kinds = frame.dtypes.astype(str).to_dict()
    assert kinds["n"] == kinds["seed"] == kinds["steps"] == "int64"
    assert kinds["gamma"] == kinds["test_error"] == "float64"
    assert kinds["interpolated"] == "bool"
    assert "trajectory" not in frame.columns and "max_margin" not in frame.columns


@pytest.mark.fast
def test_parquet_round_trips_through_pandas_and_duckdb(
    app: AppClient, stored_job: str, result: dict[str, Any], tmp_path: Path
) -> None:
    import duckdb
    import pandas as pd

    answer = app.get(f"/v1/jobs/{stored_job}/results", params={"format": "parquet"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    check_frame(pd.read_parquet(io.BytesIO(answer.content)), result)

    table = tmp_path / "runs.parquet"
    table.write_bytes(answer.content)
    rows = duckdb.sql(
        f"SELECT index, seed, test_error, max_margin_test_error, steps "
        f"FROM read_parquet('{table}') ORDER BY index, seed"
    ).fetchall()
    assert rows == [
        (c["index"], r["seed"], r["test_error"], r["max_margin"]["test_error"], r["steps"])
        for c in result["cells"]
        for r in c["runs"]
    ]
    means = duckdb.sql(
        f"SELECT index, avg(test_error) FROM read_parquet('{table}') GROUP BY index ORDER BY index"
    ).fetchall()
    for (index, mean), cell in zip(means, result["cells"], strict=True):
        assert index == cell["index"]
        assert mean == pytest.approx(cell["summary"]["test_error"]["mean"], rel=1e-12)


@pytest.mark.fast
def test_parquet_without_pyarrow_answers_501_naming_the_extra(
    app: AppClient, stored_job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    answer = app.get(f"/v1/jobs/{stored_job}/results", params={"format": "parquet"})
    assert answer.status_code == 501
    assert "pip install 'bolab[frames]'" in answer.json()["detail"]
    # Nothing else changed: JSON still answers.
    assert app.get(f"/v1/jobs/{stored_job}/results").status_code == 200


@pytest.mark.fast
def test_local_run_writes_parquet(tmp_path: Path, result: dict[str, Any]) -> None:
    import json

    import pandas as pd

    spec, out = tmp_path / "spec.json", tmp_path / "runs.parquet"
    spec.write_text(json.dumps(GRID))
    done = CliRunner().invoke(cli, ["run", "--local", str(spec), "--format", "parquet", "--out",
                                    str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    check_frame(pd.read_parquet(out), result)  # the same numbers as the in-process run


def test_client_frames_and_cli_parquet_from_the_service(lab: LabClient, tmp_path: Path) -> None:
    import pandas as pd

    job_id = lab.submit(GRID)["id"]
    assert lab.wait(job_id, timeout=120)["status"] == "succeeded"
    result = lab.results(job_id)

    check_frame(lab.frame(job_id, rows="runs"), result)
    cells = lab.frame(job_id, rows="cells")
    assert list(cells["index"]) == [0, 1, 2, 3]
    for row, cell in zip(cells.to_dict("records"), result["cells"], strict=True):
        assert row["test_error_mean"] == pytest.approx(cell["summary"]["test_error"]["mean"])
        assert row["gamma"] == cell["params"]["gamma"]

    out = tmp_path / "job.parquet"
    done = CliRunner().invoke(
        cli,
        [
            "results",
            job_id,
            "--format",
            "parquet",
            "--out",
            str(out),
            "--url",
            lab.http.base_url.__str__(),
        ],
    )
    assert done.exit_code == 0, done.output
    check_frame(pd.read_parquet(out), result)
