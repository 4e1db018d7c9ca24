"""`bolab export`: a result, from a file or from the service, into an experiment tracker.

    bolab export RESULT.json --mlflow http://mlflow:5000 [--experiment NAME]
    bolab export JOB_ID --mlflow http://mlflow:5000

One parent run per job and one child run per cell (`service.mlflow_export`); exporting the same
job again updates the same runs. A result file exports under its file name (without `.json`) as
its job id, so `bolab results JOB --out JOB.json` then `bolab export JOB.json` updates the runs
that `bolab export JOB` made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bolab.client import DEFAULT_URL
from bolab.console import err, out
from bolab.service_cli import UrlOpt, talking_to


def _source(source: str, url: str) -> tuple[dict[str, Any], str, str]:
    """The result, its job id and its run name: from a file when SOURCE is one, else the
    service's job of that id."""
    path = Path(source)
    if path.is_file():
        return json.loads(path.read_text()), path.stem, path.name
    with talking_to(url) as client:
        return client.results(source), source, source


def _figure(result: dict[str, Any]) -> bytes | None:
    from bo_engine.plots import figure_png

    try:
        return figure_png(result)
    except Exception as exc:  # a result that cannot be drawn is exported without its figure
        err.print(f"[yellow]no figure[/]: {exc}")
        return None


def export(
    source: Annotated[str, typer.Argument(help="a result JSON file, or a job id on the service")],
    mlflow: Annotated[
        str,
        typer.Option(
            "--mlflow", envvar="BOLAB_MLFLOW_TRACKING_URI", help="MLflow tracking URI to log to"
        ),
    ],
    experiment: Annotated[
        str,
        typer.Option(envvar="BOLAB_MLFLOW_EXPERIMENT", help="MLflow experiment (made if missing)"),
    ] = "bolab",
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Log a result to MLflow: a parent run for the job (spec's fixed fields, result JSON and
    figure), a child run per cell (its params, metric means, stds and 95 % intervals). Again
    for the same job: the same runs, updated."""
    from service import mlflow_export

    try:
        client = mlflow_export.client_for(mlflow)
    except ImportError as missing:
        err.print(str(missing), style="red", markup=False)
        raise typer.Exit(2) from None
    result, job_id, run_name = _source(source, url)
    done = mlflow_export.export(
        client,
        result,
        job_id=job_id,
        experiment=experiment,
        run_name=run_name,
        figure=_figure(result),
    )
    out.print(
        f"{job_id}: run {done.run_id} ({len(done.cell_run_ids)} cell runs) in experiment "
        f"{done.experiment_id} of {mlflow}"
    )


def register(app: typer.Typer) -> None:
    app.command()(export)
