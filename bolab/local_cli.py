"""Engine verbs of the `bolab` command: `run` a spec (here with --local, or on the service) and
`plot` a result. The engine (torch) is imported inside the verbs, so `bolab --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bo_engine.spec import JobSpec
from bolab.console import emit, emit_bytes, err, out

Format = Literal["json", "csv", "table", "parquet"]
SpecArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JobSpec JSON file")]


def load_spec(path: Path) -> JobSpec:
    """Parse and validate a spec file; on error print every offending field and exit 2."""
    try:
        return JobSpec.model_validate_json(path.read_text())
    except ValidationError as exc:
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem["loc"]) or "spec"
            err.print(f"[red]invalid[/] {where}: {problem['msg']}")
        raise typer.Exit(2) from None


def write_result(result: dict[str, Any], spec: JobSpec, fmt: Format, out_file: Path | None) -> None:
    from bo_engine.results import cells_to_csv, summary_rows
    from bolab.service_cli import summary_table

    if fmt == "table":
        job = {"id": "local", "status": "succeeded", "spec": spec.model_dump()}
        out.print(summary_table({**job, "summary": summary_rows(result["cells"])}))
        return
    if fmt == "parquet":
        emit_bytes(parquet_or_exit(result["cells"]), out_file)
        return
    text = cells_to_csv(result["cells"]) if fmt == "csv" else json.dumps(result, indent=2)
    emit(text, out_file)


def parquet_or_exit(cells: list[dict[str, Any]]) -> bytes:
    """The runs as Parquet; without pyarrow, say how to install it and exit 2."""
    from service.parquet import FramesMissing, runs_parquet

    try:
        return runs_parquet(cells)
    except FramesMissing as missing:
        err.print(str(missing), style="red", markup=False)
        raise typer.Exit(2) from None


def run(
    spec_file: SpecArg,
    local: Annotated[
        bool, typer.Option("--local", help="train in this process (no Redis, no service)")
    ] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="write here, not stdout")] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="json (full result), csv (a row per cell), table, or parquet (a row per run; "
            "needs bolab[frames])",
        ),
    ] = "json",
    device: Annotated[
        str | None, typer.Option(help="override the spec's device: auto, cpu or cuda")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache",
            file_okay=False,
            help="with --local: a run cache directory (one file per run); runs found there are "
            "not trained again, runs trained are added",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="only show what the run would take; train nothing"),
    ] = False,
) -> None:
    """Run a spec and write its result: in this process with --local, else on the lab service.

    Without --local this is `bolab submit SPEC --wait` followed by `bolab results`.
    """
    if fmt not in ("json", "csv", "table", "parquet"):
        raise typer.BadParameter("json, csv, table or parquet", param_hint="--format")
    spec = load_spec(spec_file)
    if device is not None:
        spec = JobSpec.model_validate({**spec.model_dump(exclude_unset=True), "device": device})
    if cache is not None and not local:
        raise typer.BadParameter(
            "--cache needs --local (the service has its own)", param_hint="--cache"
        )
    if dry_run:
        _dry_run(spec, local, cache)
        return
    result = _run_here(spec, cache) if local else _run_on_service(spec)
    write_result(result, spec, fmt, out_file)  # type: ignore[arg-type]


def _dry_run(spec: JobSpec, local: bool, cache_dir: Path | None) -> None:
    """The estimate of this machine (--local: the shipped model, this machine's cores, the
    default lab's bounds, the runs in the --cache directory) or of the service."""
    from bolab.service_cli import show_estimate

    if not local:
        from bolab.client import default_url
        from bolab.service_cli import talking_to

        with talking_to(default_url()) as client:
            show_estimate(client.estimate(spec.model_dump(mode="json", exclude_unset=True)))
        return
    show_estimate(local_estimate(spec, cache_dir))


def local_estimate(spec: JobSpec, cache_dir: Path | None = None) -> dict[str, Any]:
    """The dry run's answer for a run in this process: the shipped model with this machine's
    cores (all of them train runs), the runs found in `cache_dir`, and the bounds a lab with
    these BOLAB_ settings applies."""
    import os
    from dataclasses import asdict, replace

    from bo_engine.estimate import default_model, estimate
    from bolab.local_cache import DirCache
    from jobmodel.settings import Settings
    from service.limits import priced, violations

    cpus = len(os.sched_getaffinity(0))
    model = replace(default_model(), cpus=cpus)
    # An adaptive spec is estimated by its budget, its cells being unknown before it runs.
    reads_cache = cache_dir and spec.cache and not spec.is_adaptive
    cached = DirCache(cache_dir).cached_per_cell(spec) if reads_cache else {}
    found = asdict(estimate(priced(spec), model, parallel_runs=cpus, cached_runs=cached))  # type: ignore[arg-type]
    return {**found, "violations": violations(spec, Settings(), cached)}


def _run_here(spec: JobSpec, cache_dir: Path | None = None) -> dict[str, Any]:
    from bolab.local_cache import DirCache

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        try:
            cache = DirCache(cache_dir) if cache_dir is not None else None
            result = _train_with_bar(spec, cache, bar)
        except RuntimeError as exc:  # e.g. cuda asked for where there is none
            err.print(f"[red]cannot run[/]: {exc}")
            raise typer.Exit(1) from None
    engine = result["engine"]
    runs = [run for cell in result["cells"] for run in cell["runs"]]
    cached = sum(run.get("cached", False) for run in runs)
    rounds = f" over {len(result['rounds'])} round(s)" if "rounds" in result else ""
    err.print(
        f"{len(runs)} runs in {len(result['cells'])} cells{rounds} ({cached} from the cache), "
        f"{engine['wall_seconds']:.1f} s on {engine['device']} ({engine['dtype']})"
    )
    return result


def _train_with_bar(spec: JobSpec, cache: Any, bar: Progress) -> dict[str, Any]:
    """Train the spec, advancing the bar; an adaptive spec's bar counts each round's runs."""
    from bo_engine.runner import run_adaptive, run_spec

    if not spec.is_adaptive:
        task = bar.add_task(f"training {len(spec.cells)} cell(s)", total=spec.runs_total)
        return run_spec(spec, cache=cache, on_runs_done=lambda k: bar.advance(task, k))
    task = bar.add_task("round 0", total=0)

    def next_round(k: int, requests: list[Any]) -> None:
        runs = sum(r.cell.seeds for r in requests)
        bar.reset(task, total=runs, description=f"round {k}: {len(requests)} cell(s)")

    return run_adaptive(
        spec, cache=cache, on_runs_done=lambda k: bar.advance(task, k), on_round=next_round
    )


def _run_on_service(spec: JobSpec) -> dict[str, Any]:
    from bolab.client import default_url
    from bolab.service_cli import talking_to, wait_with_bar

    with talking_to(default_url()) as client:
        job_id = client.submit(spec.model_dump(exclude_unset=True))["id"]
        job = wait_with_bar(client, job_id)
        if job["status"] != "succeeded":
            err.print(f"[red]job {job['status']}[/]: {job.get('error') or ''}")
            raise typer.Exit(1)
        return json.loads(client.results_text(job_id, "json"))


def plot(
    result_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="result JSON from `bolab run`")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="PNG file to write")] = Path("fig.png"),
    kind: Annotated[
        str, typer.Option(help="auto, heatmap, lines or boundary (a refine result's crossings)")
    ] = "auto",
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay", help="add the theory's curves (gamma = c/n, gamma = c alpha^3/d) and "
            "the boundaries a refine search found"
        ),
    ] = False,
) -> None:
    """Draw a result: a heatmap (log colour) for a two-axis grid, curves for one axis, or the
    boundaries a refine search found against the line axis (log-log, with the fitted power law
    and the theory's slope)."""
    from bo_engine.plots import figure_png

    if kind not in ("auto", "heatmap", "lines", "boundary"):
        raise typer.BadParameter("auto, heatmap, lines or boundary", param_hint="--kind")
    try:
        result = json.loads(result_file.read_text())
        png = figure_png(result, kind, overlay)  # type: ignore[arg-type]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        err.print(f"[red]cannot draw {result_file}[/]: {exc}")
        raise typer.Exit(1) from None
    out_file.write_bytes(png)
    err.print(f"wrote {out_file}")


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(plot)
