"""A bolab result as MLflow runs: one parent run per job, one child run per cell.

The parent (run name: the job id, or the result file's name) has as params the resolved
parameters every cell shares, the swept `axes` and the engine's `dtype` and `device`; tags
`bolab.job_id`, `bolab.engine_version`, `bolab.numerics_version`; the metric `wall_seconds`;
artifacts `result.json` and `figure.png`. An adaptive job's `boundaries` and `scaling` fit go
along as JSON artifacts (and the scaling fit's numbers as `scaling.<name>` metrics). Each cell's
child run has the cell's resolved `params` as params, `<metric>_mean`, `<metric>_std`,
`<metric>_ci95_lo`/`_hi` (where the summary has an interval) and `interpolated_fraction` as
metrics, and the tag `bolab.cell_index`.

Exporting is idempotent: runs are looked up by their tags before any is made (the parent by
`bolab.job_id`, a child by its parent and `bolab.cell_index`), so exporting a job again, or
finishing an export that was cut short, updates the same runs. Params never change (MLflow
refuses that); metrics take the new values.

Called by `bolab export` and by the API's automatic export (`service.auto_export`); it needs
only MLflow's client (`pip install 'bolab[mlflow]'`), imported on the first export.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bo_engine
from bo_engine.results import RUN_METRICS
from service.schemas import finite

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

INSTALL_HINT = "MLflow export needs MLflow's client: pip install 'bolab[mlflow]'"
JOB_TAG, CELL_TAG, PARENT_TAG = "bolab.job_id", "bolab.cell_index", "mlflow.parentRunId"
ADAPTIVE_FIELDS = ("boundaries", "scaling")
PAGE = 1000  # runs per search page


@dataclass(frozen=True)
class Exported:
    experiment_id: str
    run_id: str  # the job's parent run
    cell_run_ids: dict[int, str]


def client_for(tracking_uri: str) -> MlflowClient:
    """MLflow's client of that server; ImportError naming the extra when MLflow is missing."""
    try:
        from mlflow import MlflowClient
    except ImportError as missing:
        raise ImportError(INSTALL_HINT) from missing
    # MLflow prints each run's URL on stdout as it ends the run: the CLI's stdout is its answer
    # and the API's is its log, so not here (MLflow reads this variable at each run's end).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return MlflowClient(tracking_uri=tracking_uri)


def export(
    client: MlflowClient,
    result: dict[str, Any],
    *,
    job_id: str,
    experiment: str,
    run_name: str | None = None,
    figure: bytes | None = None,
) -> Exported:
    """Log `result` as the runs of job `job_id` in `experiment`; `figure` is its PNG."""
    experiment_id = experiment_id_for(client, experiment)
    found = search_all(client, experiment_id, f"tags.\"{JOB_TAG}\" = '{job_id}'")
    parent = found[0] if found else create_run(
        client, experiment_id, parent_tags(job_id), run_name or job_id
    )
    log(client, parent.info.run_id, parent_params(result), parent_metrics(result))
    log_artifacts(client, parent.info.run_id, result, figure)
    children = existing_children(client, experiment_id, parent.info.run_id)
    for cell in result["cells"]:
        index = int(cell["index"])
        if index not in children:
            tags = {PARENT_TAG: parent.info.run_id, CELL_TAG: str(index)}
            children[index] = create_run(client, experiment_id, tags, f"{job_id}/cell-{index}")
        log(client, children[index].info.run_id, cell["params"], cell_metrics(cell["summary"]))
        finish(client, children[index])
    finish(client, parent)
    cell_runs = {index: run.info.run_id for index, run in children.items()}
    return Exported(experiment_id, parent.info.run_id, cell_runs)


def experiment_id_for(client: MlflowClient, name: str) -> str:
    """The experiment's id, made if missing (another process may make it at the same time)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def parent_tags(job_id: str) -> dict[str, str]:
    return {
        JOB_TAG: job_id,
        "bolab.engine_version": bo_engine.__version__,
        "bolab.numerics_version": str(bo_engine.NUMERICS_VERSION),
    }


def search_all(client: MlflowClient, experiment_id: str, where: str) -> list[Run]:
    """Every live run of the experiment that matches `where`, oldest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=where,
            max_results=PAGE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def create_run(client: MlflowClient, experiment_id: str, tags: dict[str, str], name: str) -> Run:
    """A new run whose tags are set as it is made: a run cut short is still found by them."""
    return client.create_run(experiment_id, tags=tags, run_name=name)


def finish(client: MlflowClient, run: Run) -> None:
    """Mark a run finished, unless an earlier export did (its end time then stays)."""
    if run.info.status != "FINISHED":
        client.set_terminated(run.info.run_id, "FINISHED")


def existing_children(client: MlflowClient, experiment_id: str, parent: str) -> dict[int, Run]:
    """Cell index -> the parent's child run of that cell made by an earlier export."""
    runs = search_all(client, experiment_id, f"tags.\"{PARENT_TAG}\" = '{parent}'")
    children: dict[int, Run] = {}
    for run in runs:
        index = run.data.tags.get(CELL_TAG)
        if index is not None and int(index) not in children:
            children[int(index)] = run
    return children


def param_text(value: Any) -> str:
    """A param as MLflow keeps it (text): strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def parent_params(result: dict[str, Any]) -> dict[str, Any]:
    """The resolved parameters all cells share, the swept axes, the engine's dtype and device."""
    cells = result["cells"]
    shared = dict(cells[0]["params"]) if cells else {}
    for cell in cells[1:]:
        shared = {k: v for k, v in shared.items() if cell["params"].get(k) == v}
    engine = result.get("engine") or {}
    facts = {k: engine[k] for k in ("dtype", "device") if k in engine}
    return {**shared, "axes": ",".join(result.get("axes") or []), **facts}


def parent_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    engine = result.get("engine") or {}
    metrics: dict[str, float | None] = {"wall_seconds": engine.get("wall_seconds")}
    scaling = result.get("scaling")
    if isinstance(scaling, dict):
        metrics.update({f"scaling.{k}": v for k, v in scaling.items() if _number(v)})
    return metrics


def cell_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """<metric>_mean, _std, _ci95_lo, _ci95_hi for every run metric, interpolated_fraction."""
    metrics: dict[str, float | None] = {}
    for name in RUN_METRICS:
        stats = summary.get(name) or {}
        metrics[f"{name}_mean"], metrics[f"{name}_std"] = stats.get("mean"), stats.get("std")
        interval = stats.get("ci95")
        if interval:
            metrics[f"{name}_ci95_lo"], metrics[f"{name}_ci95_hi"] = interval
    metrics["interpolated_fraction"] = summary.get("interpolated_fraction")
    interval = (summary.get("interpolated") or {}).get("ci95")
    if interval:
        lo, hi = interval
        metrics["interpolated_fraction_ci95_lo"], metrics["interpolated_fraction_ci95_hi"] = lo, hi
    return metrics


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def log(
    client: MlflowClient, run_id: str, params: dict[str, Any], metrics: dict[str, float | None]
) -> None:
    """Params and the metrics that have a value (step 0), in one request."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(key, float(value), now, 0) for key, value in metrics.items() if _number(value)
        ],
        params=[Param(key, param_text(value)) for key, value in params.items()],
    )


def log_artifacts(
    client: MlflowClient, run_id: str, result: dict[str, Any], figure: bytes | None
) -> None:
    """result.json, figure.png and an adaptive job's fields as JSON, at the artifact root."""
    with tempfile.TemporaryDirectory(prefix="bolab-mlflow-") as tmp:
        files = {"result.json": json.dumps(finite(result)).encode()}
        if figure is not None:
            files["figure.png"] = figure
        for name in ADAPTIVE_FIELDS:
            if isinstance(result.get(name), dict | list):
                files[f"{name}.json"] = json.dumps(finite(result[name])).encode()
        for name, content in files.items():
            path = Path(tmp) / name
            path.write_bytes(content)
            client.log_artifact(run_id, str(path))
