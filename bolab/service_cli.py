"""Service verbs of the `bolab` command: run the stack (`up`, `api`, `worker`), and talk to it
(`submit`, `status`, `results`, `cancel`, `delete`, `openapi`).

Heavy imports (FastAPI app, Celery, uvicorn) happen inside the verbs, so `bolab --help` and the
client verbs stay fast and need no torch.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bolab.client import DEFAULT_URL, Job, LabClient, LabError
from bolab.console import emit, emit_bytes, err, out

if TYPE_CHECKING:
    from bolab.stack import Stack
    from jobmodel.settings import Settings

UrlOpt = Annotated[
    str, typer.Option("--url", envvar="BOLAB_URL", help="lab service URL", show_default=True)
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option("--redis-url", envvar="BOLAB_REDIS_URL", help="Redis URL (job store and broker)"),
]
JobArg = Annotated[str, typer.Argument(help="job id (from `bolab submit`)")]

# Columns of the summary table, after the grid axes: (row key, header).
SUMMARY_COLUMNS = (
    ("test_error_mean", "test err"),
    ("test_error_std", "± std"),
    ("test_error_ci95", "95 % interval"),
    ("train_error_mean", "train err"),
    ("normalized_margin_mean", "norm. margin"),
    ("steps_mean", "steps"),
    ("interpolated_fraction", "interp."),
    ("runs", "runs"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def _interval(row: dict[str, Any], metric: str) -> str | None:
    """A summary row's 95 % interval of `metric` as "[lo, hi]"; None without one."""
    lo, hi = row.get(f"{metric}_ci95_lo"), row.get(f"{metric}_ci95_hi")
    return None if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"


def _span(pair: list[float] | None, unit: str = "") -> str:
    return "no data yet" if pair is None else f"{pair[0]:,.3g} – {pair[1]:,.3g}{unit}"


def estimate_table(found: dict[str, Any]) -> Table:
    """A dry run's answer: what the job would take, and each bound it would break."""
    table = Table(title="estimate (nothing submitted)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("cells", str(found["cells"]))
    table.add_row("runs (cached / to train)", f"{found['runs']} ({found['runs_cached']} / "
                  f"{found['runs_to_train']})")
    table.add_row("GD steps", _span(found["gd_steps"]))
    table.add_row("wall time, CPU worker", _span(found["seconds"]["cpu"], " s"))
    table.add_row("wall time, GPU worker", _span(found["seconds"]["gpu"], " s"))
    table.add_row("peak memory of a batch", f"{found['peak_batch_bytes'] / 2**20:,.0f} MiB")
    for violation in found["violations"]:
        table.add_row("[red]over a bound[/]", violation)
    return table


def summary_table(job: Job) -> Table:
    """One row per finished cell: the swept axes (or n, d, gamma) and a refine search's axis,
    then the key metrics."""
    spec = job.get("spec") or {}
    axes = list(spec.get("grid") or {}) or ["n", "d", "gamma"]
    refine = spec.get("refine")
    if refine and refine["axis"] not in axes:
        axes.append(refine["axis"])
    table = Table(title=f"job {job['id']}: {job['status']}")
    for axis in axes:
        table.add_column(axis, justify="right")
    for _, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="right")
    for row in job.get("summary") or []:
        row = {**row, "test_error_ci95": _interval(row, "test_error")}
        table.add_row(
            *(_fmt(row.get(a)) for a in axes), *(_fmt(row.get(k)) for k, _ in SUMMARY_COLUMNS)
        )
    return table


def show_estimate(found: dict[str, Any]) -> None:
    """Print a dry run's estimate; exit 1 when the job would break a bound."""
    out.print(estimate_table(found))
    if found["violations"]:
        raise typer.Exit(1)


@contextmanager
def talking_to(url: str) -> Iterator[LabClient]:
    """A client whose errors end the command with a readable message and exit status 1."""
    import httpx

    try:
        with LabClient(url) as client:
            yield client
    except LabError as exc:
        if isinstance(exc.detail, list):  # validation errors: one line per offending field
            for problem in exc.detail:
                where = ".".join(str(p) for p in problem.get("loc", []) if p != "body")
                err.print(f"[red]invalid[/] {where or 'spec'}: {problem.get('msg')}")
        else:
            err.print(f"[red]error {exc.status_code}[/]: {exc.detail}")
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        err.print(f"[red]cannot reach the lab service at {url}[/] ({exc}); is `bolab up` running?")
        raise typer.Exit(1) from None


def wait_with_bar(client: LabClient, job_id: str) -> Job:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(f"job {job_id}", total=None)

        def update(job: Job) -> None:
            p = job["progress"]
            bar.update(
                task,
                total=p["runs_total"],
                completed=p["runs_done"],
                description=f"job {job_id} {job['status']}",
            )

        try:
            return client.wait(job_id, on_update=update)
        except KeyboardInterrupt:
            err.print(f"stopped waiting; the job goes on: bolab status {job_id}")
            raise typer.Exit(130) from None


def submit(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JobSpec JSON file")],
    url: UrlOpt = DEFAULT_URL,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the job's event stream, then the summary")
    ] = False,
    notify_url: Annotated[
        str | None, typer.Option("--notify-url", help="webhook: POST the summary here at the end")
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="retrain every run, even those the lab's run cache holds"),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="only show what the job would take; submit nothing"),
    ] = False,
) -> None:
    """Submit a JobSpec to the lab service; prints the job id (or, with --wait, the summary).
    With --dry-run, prints the service's estimate instead (exit 1 if it breaks a bound)."""
    try:
        body = json.loads(spec.read_text())
    except json.JSONDecodeError as exc:
        err.print(f"[red]{spec} is not valid JSON[/]: {exc}")
        raise typer.Exit(1) from None
    if no_cache and isinstance(body, dict):
        body["cache"] = False
    with talking_to(url) as client:
        if dry_run:
            show_estimate(client.estimate(body))
            return
        job_id = client.submit(body, notify_url=notify_url)["id"]
        if not wait:
            typer.echo(job_id)
            return
        job = wait_with_bar(client, job_id)
        out.print(summary_table(job))
        if job["status"] != "succeeded":
            err.print(f"[red]job {job['status']}[/]: {job.get('error') or ''}")
            raise typer.Exit(1)


def status(
    job_id: JobArg,
    url: UrlOpt = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False,
) -> None:
    """Show a job's status, progress and the summary of its finished cells."""
    with talking_to(url) as client:
        job = client.status(job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    p = job["progress"]
    out.print(
        f"[bold]{job['id']}[/] {job['status']}  {p['runs_done']}/{p['runs_total']} runs "
        f"({p['fraction']:.0%}, {p.get('runs_cached', 0)} from the cache)  "
        f"created {job['created_at']}"
    )
    if job.get("error"):
        out.print(f"[red]error[/]: {job['error']}")
    if job.get("summary"):
        out.print(summary_table(job))


def results(
    job_id: JobArg,
    url: UrlOpt = DEFAULT_URL,
    format: Annotated[
        str, typer.Option("--format", help="json, csv (a row per cell) or parquet (a row per run)")
    ] = "json",
    out_file: Annotated[Path | None, typer.Option("--out", help="write here, not stdout")] = None,
) -> None:
    """Fetch a finished job's results: the full JSON, one CSV row per cell, or one Parquet row
    per run."""
    if format not in ("json", "csv", "parquet"):
        raise typer.BadParameter("json, csv or parquet", param_hint="--format")
    if format == "parquet":
        with talking_to(url) as client:
            emit_bytes(client.results_parquet(job_id), out_file)
        return
    fmt: Literal["json", "csv"] = "csv" if format == "csv" else "json"
    with talking_to(url) as client:
        text = client.results_text(job_id, fmt)
    emit(text, out_file)


def cancel(job_id: JobArg, url: UrlOpt = DEFAULT_URL) -> None:
    """Cancel a queued or running job (cells already finished stay in its results)."""
    with talking_to(url) as client:
        job = client.cancel(job_id)
    typer.echo(f"{job['id']} {job['status']}")


def delete(job_id: JobArg, url: UrlOpt = DEFAULT_URL) -> None:
    """Delete a finished job: its record, results and events (cancel an active job first)."""
    with talking_to(url) as client:
        client.delete(job_id)
    typer.echo(f"{job_id} deleted")


def openapi() -> None:
    """Print the API's OpenAPI document (`bolab openapi > openapi/openapi.json`)."""
    from jobmodel.settings import Settings
    from service.main import create_app

    typer.echo(json.dumps(create_app(Settings()).openapi(), sort_keys=True, indent=2))


def _settings(**overrides: Any) -> Settings:
    """The environment's settings (`BOLAB_*`), with what the command line says instead."""
    from jobmodel.settings import Settings

    given = {name: value for name, value in overrides.items() if value is not None}
    return Settings(**given)


def _refuse_open_bind(host: str, settings: Settings) -> None:
    """No API keys configured: serve on loopback only, and say so loudly."""
    from service.auth import is_loopback, keyring

    if not keyring(settings).open:
        return
    if not is_loopback(host):
        err.print(
            f"[red bold]refusing to serve on {host} without API keys[/]: anyone who can reach "
            "it could run and read jobs. Add keys (`bolab keys add NAME`, then set "
            "BOLAB_KEYS_FILE) or bind 127.0.0.1."
        )
        raise typer.Exit(2)
    err.print(
        "[yellow bold]WARNING: no API keys configured: the API is OPEN to every local user "
        f"(owner 'anonymous') and bound to {host} only.[/] `bolab keys add NAME` to add keys."
    )


def api(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Serve the REST API (uvicorn). Reads the Redis URL from BOLAB_REDIS_URL.

    Without API keys (BOLAB_API_KEYS / BOLAB_KEYS_FILE) it serves on loopback addresses only.
    """
    import uvicorn

    from service.main import create_app

    settings = _settings(redis_url=redis_url)
    _refuse_open_bind(host, settings)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def worker(
    queues: Annotated[str, typer.Option(help="comma-separated: cpu, gpu or cpu,gpu")] = "cpu",
    concurrency: Annotated[int, typer.Option(min=1, help="batches run at once")] = 1,
    pool: Annotated[
        str,
        typer.Option(help="auto (threads when serving gpu, else prefork), prefork, threads, solo"),
    ] = "auto",
    name: Annotated[str | None, typer.Option(help="Celery node name (name@host)")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "info",
    redis_url: RedisUrlOpt = None,
) -> None:
    """Run a Celery worker that trains batches. Reads the Redis URL from BOLAB_REDIS_URL."""
    from jobmodel.queue import QUEUES
    from worker.celery_app import celery_app, configure

    settings = _settings(redis_url=redis_url)
    configure(settings)

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if not wanted or unknown:
        raise typer.BadParameter(f"queues are {', '.join(QUEUES)}", param_hint="--queues")
    # Batches running side by side share the cores: torch threads beyond that only spin. A
    # batch trains as many runs at once as torch has threads, and admission control counts
    # the memory of BOLAB_MAX_PARALLEL_RUNS of them, so never more.
    threads = int(os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1) // concurrency)
    threads = min(threads, settings.max_parallel_runs)
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))
    if pool == "auto":
        # CUDA must not be used across a fork: GPU workers run batches in their own process.
        pool = "threads" if "gpu" in wanted else "prefork"
    argv = [
        "worker",
        f"--queues={','.join(wanted)}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if name:
        argv.append(f"--hostname={name}")
    celery_app.worker_main(argv)


def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="use this Redis instead of an embedded one")
    ] = None,
    host: Annotated[str, typer.Option(help="API address to bind")] = "127.0.0.1",
    data_dir: Annotated[
        Path | None, typer.Option(help="embedded Redis data (default BOLAB_DATA_DIR or ./.bolab)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="worker concurrency")] = 1,
    redis_port: Annotated[
        int, typer.Option(help="embedded Redis port (a free one if this one is taken)")
    ] = 6379,
) -> None:
    """Start the whole lab locally: Redis (embedded, AOF on), the API and one worker.

    Ctrl-C stops all three cleanly.
    """
    from bolab.stack import Stack, masked_url, port_free

    settings = _settings()
    data = data_dir or settings.data_dir
    data.mkdir(mode=0o700, parents=True, exist_ok=True)  # new: its owner's only (keys, Redis)
    env: dict[str, str] = {}
    if settings.keys_file is None:
        # Always, so `bolab keys add` takes effect while we run. A keys file that does not exist
        # is "no keys configured": open, loopback only, with the warning. Once it exists (even
        # emptied later) keys are configured and the API is never open (service.auth.KeyRing).
        keys_file = (data / "keys").resolve()
        settings = _settings(keys_file=keys_file)
        env["BOLAB_KEYS_FILE"] = str(keys_file)
    _refuse_open_bind(host, settings)
    if not port_free(redis_port):  # another Redis there: pick a free port, say so below
        redis_port = 0
    stack = Stack(
        data,
        api_port=port,
        redis_url=redis_url,
        redis_port=redis_port,
        redis_maxmemory=settings.redis_maxmemory,
        host=host,
        concurrency=concurrency,
        env=env,
    )

    def terminate(*_: object) -> None:
        raise KeyboardInterrupt

    # Both, explicitly: a shell that starts us in the background has SIGINT ignored.
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    try:
        err.print("starting Redis, API and worker ...")
        stack.start()
        err.print(
            f"[green]bolab is up[/]: API {stack.api.url} (docs {stack.api.url}/docs)\n"
            f"  Redis {masked_url(stack.redis_url)} ({_redis_where(stack, data)})\n"
            f"  worker {stack.worker.worker_name} (queues cpu,gpu)\n"
            f"  try: bolab submit examples/paper_gamma.json --wait --url {stack.api.url}\n"
            "Ctrl-C stops all three."
        )
        stack.watch(lambda p: err.print(f"[red]{p.name} exited[/]; stopping the others"))
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print("stopping worker, API and Redis ...")
    finally:
        stack.stop()
    err.print("stopped.")


def _redis_where(stack: Stack, data: Path) -> str:
    """Which Redis `bolab up` uses, and a warning when the embedded one is older than 7."""
    if stack.redis is None:
        return "external"
    version = stack.redis.version
    said = (
        f"embedded Redis {'.'.join(map(str, version))}, password and data in {data.resolve()}"
        f", maxmemory {stack.redis.maxmemory or 'none'}"
    )
    if version < (7,):
        said += "; [yellow]older than 7: put a redis-server 7 or newer on PATH[/]"
    return said


def register(app: typer.Typer) -> None:
    for verb in (api, worker, up, submit, status, results, cancel, delete, openapi):
        app.command()(verb)
