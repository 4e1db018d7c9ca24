"""The engine verbs of `bolab`: `run --local` (JSON, CSV, table, bad specs), `run` on the
service, and `plot` (heatmap or curves, chosen from the swept axes)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bo_engine.plots import plot_axes, plot_result
from bolab.cli import app
from bolab.client import LabClient
from tests.helpers import TINY, as_trained

pytestmark = pytest.mark.timeout(120)

GRID = {**TINY, "dtype": "float64", "grid": {"n": [20, 30], "d_over_n": [1, 2, 3]}}


def bolab(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def grid_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    where = tmp_path_factory.mktemp("local")
    spec = where / "spec.json"
    spec.write_text(json.dumps(GRID))
    out = where / "result.json"
    code, _, err = bolab("run", "--local", str(spec), "--out", str(out))
    assert code == 0, err
    return spec, json.loads(out.read_text())


def test_run_local_writes_the_result_document(grid_result: tuple[Path, dict]) -> None:
    _, result = grid_result
    assert result["axes"] == ["n", "d_over_n"]
    assert [c["index"] for c in result["cells"]] == list(range(6))
    assert [(c["params"]["n"], c["params"]["d"]) for c in result["cells"]] == [
        (20, 20), (20, 40), (20, 60), (30, 30), (30, 60), (30, 90),
    ]  # fmt: skip
    assert all(len(c["runs"]) == TINY["seeds"] for c in result["cells"])
    assert result["engine"]["device"] == "cpu" and result["engine"]["dtype"] == "float64"
    first = result["cells"][0]
    mean = sum(r["test_error"] for r in first["runs"]) / len(first["runs"])
    assert first["summary"]["test_error"]["mean"] == pytest.approx(mean, rel=1e-12)


def test_run_local_csv_has_a_row_per_cell(grid_result: tuple[Path, dict]) -> None:
    spec, result = grid_result
    code, out, err = bolab("run", "--local", str(spec), "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6
    assert {"n", "d", "gamma", "test_error_mean", "test_error_std", "interpolated_fraction"} <= set(
        rows[0]
    )
    # Same seeds, same numbers as the JSON run.
    assert float(rows[5]["test_error_mean"]) == result["cells"][5]["summary"]["test_error"]["mean"]


def test_run_local_rejects_a_bad_spec_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "gamma": 1.5, "width": 15}))
    code, _, err = bolab("run", "--local", str(bad))
    assert code == 2
    assert "gamma" in err and "width" in err


def test_run_on_the_service_equals_run_local(
    lab: LabClient, grid_result: tuple[Path, dict]
) -> None:
    spec, local = grid_result
    url = str(lab.http.base_url).rstrip("/")
    code, out, err = bolab("run", str(spec), env={"BOLAB_URL": url})
    assert code == 0, err
    remote = json.loads(out)
    assert as_trained(remote)["cells"] == as_trained(local)["cells"]


def test_plot_draws_a_png(grid_result: tuple[Path, dict], tmp_path: Path) -> None:
    _, result = grid_result
    source = tmp_path / "result.json"
    source.write_text(json.dumps(result))
    figure = tmp_path / "fig.png"
    code, _, err = bolab("plot", str(source), "--out", str(figure))
    assert code == 0, err
    assert figure.read_bytes().startswith(b"\x89PNG")
    code, _, err = bolab("plot", str(tmp_path / "missing.json"))
    assert code != 0


def test_plot_kind_follows_the_swept_axes(grid_result: tuple[Path, dict]) -> None:
    _, result = grid_result
    assert plot_axes(result) == ["n", "d_over_n"]
    # Without the named axes, the pair that indexes every cell once is inferred.
    assert plot_axes({"cells": result["cells"]}) == ["n", "d_over_n"]
    # Two axes with few values on the second: curves, one line per value of it.
    curves = plot_result(result)
    assert len(curves.axes[0].get_lines()) >= 2 and curves.axes[0].get_xlabel() == "n"
    heat = plot_result(result, "heatmap")
    assert heat.axes[0].get_ylabel() == "d / n" and len(heat.axes[0].images) == 1
    one_axis = {"cells": result["cells"][:3], "axes": ["d_over_n"]}
    with pytest.raises(ValueError, match="two swept axes"):
        plot_result(one_axis, "heatmap")


def test_plot_sweeps_of_text_values_and_keeps_no_figures() -> None:
    """A sweep over the stop rule has text ticks; drawing keeps no figure alive (the API draws
    one per request)."""
    import matplotlib.pyplot as plt

    from bo_engine.plots import figure_png
    from bo_engine.runner import run_spec
    from bo_engine.spec import JobSpec

    spec = JobSpec.model_validate(
        {
            **TINY,
            "n_test": 50,
            "grid": {"stop": ["zero_train_error", "zero_loss"], "gamma": [0.1, 0.2]},
        }
    )
    result = run_spec(spec)
    for kind in ("auto", "heatmap", "lines"):
        assert figure_png(result, kind).startswith(b"\x89PNG")  # type: ignore[arg-type]
    heat = plot_result(result, "heatmap")
    labels = [t.get_text() for t in heat.axes[0].get_xticklabels()]
    assert labels == ["zero_loss", "zero_train_error"]
    assert plt.get_fignums() == []


@pytest.mark.fast
def test_run_local_dry_run_estimates_and_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    code, text, err = bolab(
        "run", "--local", "--dry-run", "examples/paper_gamma.json", "--out", str(out)
    )
    assert code == 0, err
    assert "estimate (nothing submitted)" in text
    assert "400 (0 / 400)" in text  # runs (cached / to train)
    assert "wall time, CPU worker" in text and " s" in text
    assert not out.exists()


@pytest.mark.fast
def test_run_local_dry_run_names_each_bound_and_exits_1(tmp_path: Path) -> None:
    spec = tmp_path / "big.json"
    spec.write_text(json.dumps({"n": 5000, "d": 100_000, "width": 4096, "seeds": 8}))
    code, text, _ = bolab("run", "--local", "--dry-run", str(spec), env={"COLUMNS": "300"})
    assert code == 1
    assert "max_cost" in text and "max_batch_bytes" in text
