"""Job routes under /v1/jobs: submit, inspect, list, fetch results and plots, cancel, delete."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bo_engine.plan import assemble_result
from bo_engine.results import cells_to_csv
from bo_engine.spec import JobSpec
from jobmodel.queue import queue_for
from jobmodel.settings import Settings
from jobmodel.store import (
    Creation,
    Deletion,
    IdempotentReplay,
    JobRecord,
    JobStatus,
    JobStore,
    QuotaFull,
)
from service import figures, parquet, webhook_targets
from service.auth import AUTH_RESPONSES, Caller, CallerDep
from service.capacity import RendersDep, render
from service.deps import Parts, PartsDep, StoreDep
from service.errors import (
    Conflict,
    JobNotFound,
    NotImplementedByServer,
    TooManyJobs,
)
from service.limits import (
    over_bounds_error,
    over_max_cost,
    prechecked_spec,
    priced,
    require_json,
    violations,
)
from service.schemas import (
    ErrorBody,
    JobAccepted,
    JobEstimateView,
    JobId,
    JobPage,
    JobResult,
    JobView,
    Links,
    estimate_view,
    finite,
    job_summary,
    job_view,
)

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses=AUTH_RESPONSES,
)

NOT_FOUND = {404: {"model": ErrorBody, "description": "no job with this id (that you may see)"}}
RETRY_AFTER_S = 10  # a hint: small jobs finish in seconds, the queue drains meanwhile
NOT_READY = {409: {"model": ErrorBody, "description": "the job has no results yet"}}


def _link(method: str, path: str, description: str) -> dict[str, Any]:
    """An OpenAPI link to the route `method path` for the job whose id the response holds:
    clients (and schemathesis's stateful phase) learn what to call next."""
    pointer = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method
    return {
        "operationRef": pointer,
        "parameters": {"job_id": "$response.body#/id"},
        "description": description,
    }


JOB = "/v1/jobs/{job_id}"
JOB_LINKS = {
    "status": _link("get", JOB, "the job's status and progress"),
    "results": _link("get", f"{JOB}/results", "its results, once it has some"),
    "plot": _link("get", f"{JOB}/plot.png", "its figure, once it has results"),
    "events": _link("get", f"{JOB}/events", "its events as they happen (SSE)"),
    "cancel": _link("post", f"{JOB}/cancel", "stop it"),
    "delete": _link("delete", JOB, "delete it, once it has ended"),
}


def _job(store: JobStore, job_id: str, caller: Caller) -> JobRecord:
    job = store.get(job_id)
    # Another owner's job answers exactly like a missing one: ids leak nothing.
    if job is None or not caller.may_see(job.owner):
        raise JobNotFound(job_id)
    return job


def _result(
    store: JobStore, job: JobRecord, caller: Caller, partial: bool = False
) -> dict[str, Any]:
    """Succeeded jobs have full results; cancelled or failed ones keep the cells they finished;
    with `partial`, so does a running job (the live plot of the web page)."""
    done = job.terminal or partial
    if job.status == JobStatus.succeeded or (done and store.has_cells(job.id)):
        spec = JobSpec.model_validate(job.spec)
        cells = _visible_sources(store, store.cells(job.id), caller, job.id)
        return assemble_result(spec, cells, job.engine, store.round_entries(job.id))
    if job.terminal:
        raise Conflict(f"job {job.id} is {job.status.value} and finished no cell")
    raise Conflict(
        f"job {job.id} is {job.status.value}; results appear when it finishes "
        f"(finished cells are already summarised in GET /v1/jobs/{job.id})"
    )


def _visible_sources(
    store: JobStore, cells: list[dict[str, Any]], caller: Caller, job_id: str
) -> list[dict[str, Any]]:
    """Each run's `source_job` as the caller may know it: null when that job is another
    owner's (an admin sees all) or is gone."""
    runs = [run for cell in cells for run in cell["runs"]]
    others = sorted({r["source_job"] for r in runs if r.get("source_job") not in (None, job_id)})
    owners = store.owners(others) if others else {}
    hidden = {j for j, owner in owners.items() if owner is None or not caller.may_see(owner)}
    for run in runs:
        if run.get("source_job") in hidden:
            run["source_job"] = None
    return cells


SUBMIT: dict[str, Any] = dict(
    status_code=202,
    response_model=JobAccepted,
    summary="Submit a job",
    description="Validates the JobSpec, stores the job and queues it (queue `gpu` when "
    '`device` is "cuda", else `cpu`). Answers 202 with the job id, its links and a '
    "`Location` header. A spec that fails validation, or is over a bound (sizes, grid cells, "
    "estimated cost or memory), answers 422 naming every bad field or the bound; so does a "
    "`notify_url` this deployment refuses (webhooks off, or a host not allowed). With an "
    "`Idempotency-Key` header, a retry with the same key and body answers the same job; the "
    "same key with another body answers 409. 429 with `Retry-After` when the caller already "
    "has the most queued+running jobs allowed. With `dry_run=true` nothing is stored or "
    "queued: 200 with what the job would take (cells, runs, GD steps and wall seconds as "
    "[lo, hi] ranges, peak memory) and every bound it would break.",
    dependencies=[Depends(require_json)],
    responses={
        200: {"model": JobEstimateView, "description": "dry_run=true: the estimate; nothing "
              "stored or queued"},
        202: {"description": "accepted and queued", "links": JOB_LINKS},
        400: {"model": ErrorBody, "description": "the body is not readable text (not UTF-8)"},
        409: {"model": ErrorBody, "description": "Idempotency-Key reused with another body"},
        413: {"model": ErrorBody, "description": "request body too large"},
        415: {"model": ErrorBody, "description": "the body is not declared as JSON"},
        429: {"model": ErrorBody, "description": "too many queued+running jobs for this key"},
        503: {"model": ErrorBody, "description": "Redis or the broker is unreachable"},
    },
)


def submit_router(settings: Settings) -> APIRouter:
    """POST /v1/jobs, its body type bounded by this app's settings (`service.limits`)."""
    submit = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTH_RESPONSES)
    route = _with_body_type(submit_job, prechecked_spec(settings))
    submit.post("", **SUBMIT)(route)
    return submit


def _with_body_type(
    route: Callable[..., Awaitable[Any]], body: Any
) -> Callable[..., Awaitable[Any]]:
    """`route` with its `spec` parameter declared as `body` (FastAPI reads the signature)."""
    signature = inspect.signature(route)
    params = [
        p.replace(annotation=body) if p.name == "spec" else p
        for p in signature.parameters.values()
    ]

    async def bound(**kwargs: Any) -> Any:
        return await route(**kwargs)

    bound.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    bound.__name__ = bound.__qualname__ = route.__name__
    bound.__doc__ = route.__doc__
    return bound


async def submit_job(
    spec: JobSpec,
    response: Response,
    parts: PartsDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="any unique string per intended job, kept 24 h, scoped to the caller",
        ),
    ] = None,
    notify_url: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="POST the job's summary here when it ends (signed: see README, "
            "Webhooks); 422 when the deployment has webhooks off (no BOLAB_WEBHOOK_SECRET), or "
            "host or port is not on BOLAB_WEBHOOK_ALLOWED_HOSTS and BOLAB_WEBHOOK_ALLOWED_PORTS",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        Query(description="true: validate and estimate only, store and queue nothing (200)"),
    ] = False,
) -> JobAccepted | JSONResponse:
    # A coroutine: a submit that is in bounds never leaves the event loop (its one Redis call
    # is async); the rarer paths that read the sync store take the thread pool.
    settings = parts.settings
    problems = violations(spec, settings)
    if dry_run or problems:
        estimate = await run_in_threadpool(
            _estimated_or_refused, spec, problems, parts, caller, dry_run
        )
        if estimate is not None:
            return estimate
    if notify_url is not None:
        webhook_targets.check_url(notify_url, settings)
    # Only the fields the user set: re-validating the stored spec gives the same cells.
    body = spec.model_dump(mode="json", exclude_unset=True)
    idem = None
    if idempotency_key is not None:
        key_hash = hashlib.sha256(idempotency_key.encode()).hexdigest()
        body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        idem = (key_hash, body_hash, settings.idempotency_ttl_s)
    creation = Creation.prepare(
        body,
        runs_total=priced(spec).runs_total,
        cells_total=len(priced(spec).cells),
        queue=queue_for(spec.device),
        owner=caller.owner,
        max_active=settings.max_active_jobs,
        idempotency=idem,
        notify_url=notify_url,
        job_queue=parts.queue,
        adaptive=spec.is_adaptive,
    )
    try:
        job = await parts.live.create(creation)
    except IdempotentReplay as replay:
        if not replay.same_body:
            raise Conflict(
                f"Idempotency-Key already used for job {replay.job_id} with a different body"
            ) from None
        earlier = await run_in_threadpool(parts.store.get, replay.job_id)
        return _accepted(earlier, replay.job_id, response)
    except QuotaFull as full:
        raise TooManyJobs(
            f"{full.active} jobs of {caller.owner!r} are queued or running, the most allowed "
            f"(BOLAB_MAX_ACTIVE_JOBS = {settings.max_active_jobs}); retry when some finish",
            {"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    return _accepted(job, job.id, response)


def _estimated_or_refused(
    spec: JobSpec,
    problems: list[str],
    parts: Parts,
    caller: Caller,
    dry_run: bool,
) -> JSONResponse | None:
    """A dry run's estimate; else the 422 of a spec over bounds, or None when the runs the
    cache holds bring it within them."""
    store, settings = parts.store, parts.settings
    cached: dict[int, int] = {}
    if not spec.is_adaptive and (dry_run or over_max_cost(spec, settings)):
        # Admission charges only the runs to train: the cache is read when that can matter.
        # (An adaptive job is charged its whole budget: its cells are not known yet.)
        cached = store.cached_per_cell(spec, caller.owner, settings)
        problems = violations(spec, settings, cached) if cached else problems
    if dry_run:
        found = estimate_view(parts.estimator.estimate(priced(spec), store, cached), problems)
        return JSONResponse(found.model_dump(mode="json"))
    if problems:
        raise over_bounds_error(problems, spec.model_dump(mode="json", exclude_unset=True))
    return None


def _accepted(job: JobRecord | None, job_id: str, response: Response) -> JobAccepted:
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    status = job.status if job is not None else JobStatus.queued
    return JobAccepted(id=job_id, status=status, links=Links.for_job(job_id))


@router.get(
    "",
    response_model=JobPage,
    summary="List jobs",
    description="Newest first. Filter by `status`; page with `limit` and the `next_cursor` "
    "of the previous page.",
)
def list_jobs(
    store: StoreDep,
    caller: CallerDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern="^[0-9a-f]{1,64}$", description="`next_cursor` of the previous page"),
    ] = None,
) -> JobPage:
    owner = None if caller.admin else caller.owner  # users list their own jobs only
    jobs, next_cursor = store.list(status=status, limit=limit, cursor=cursor, owner=owner)
    progress = store.progress_many([job.id for job in jobs])
    return JobPage(
        items=[job_summary(job, p) for job, p in zip(jobs, progress, strict=True)],
        next_cursor=next_cursor,
    )


@router.get(
    "/{job_id}",
    response_model=JobView,
    summary="Job status",
    description="Status, progress, timestamps, the spec, the error of a failed job, and one "
    "summary row per cell finished so far (a sweep shows partial results as cells finish).",
    responses={200: {"description": "the job", "links": JOB_LINKS}, **NOT_FOUND},
)
def get_job(job_id: JobId, store: StoreDep, caller: CallerDep) -> JobView:
    job = _job(store, job_id, caller)
    return job_view(job, store.progress(job_id), store.summaries(job_id))


@router.get(
    "/{job_id}/results",
    response_model=JobResult,
    summary="Job results",
    description="`format=json`: the full result, the same document `bolab run --local` "
    "writes. `format=csv`: one row per cell with summary columns. `format=parquet`: one row "
    "per run (the cell's index and resolved params, the seed, every run metric flattened: "
    "`max_margin.test_error` is `max_margin_test_error`), typed columns; 501 where the API "
    "lacks pyarrow (`pip install 'bolab[frames]'`). 409 while the job has no results; a "
    "cancelled job keeps the cells it finished (`engine` is then null).",
    responses={
        200: {
            "content": {
                "text/csv": {"example": "index,n,d,...\n0,50,100,...\n"},
                parquet.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            }
        },
        **NOT_FOUND,
        **NOT_READY,
        501: {"model": ErrorBody, "description": "format=parquet, and this API has no pyarrow"},
    },
)
async def get_results(
    job_id: JobId,
    store: StoreDep,
    caller: CallerDep,
    renders: RendersDep,
    format: Annotated[
        Literal["json", "csv", "parquet"], Query(description="json, csv or parquet")
    ] = "json",
) -> Response:
    return await render(renders, _results_response, store, job_id, caller, format)


def _results_response(store: JobStore, job_id: str, caller: Caller, format: str) -> Response:
    result = _result(store, _job(store, job_id, caller), caller)
    if format == "csv":
        return Response(cells_to_csv(result["cells"]), media_type="text/csv")
    if format == "parquet":
        try:
            table = parquet.runs_parquet(result["cells"])
        except parquet.FramesMissing as missing:
            raise NotImplementedByServer(str(missing)) from None
        return Response(table, media_type=parquet.MEDIA_TYPE)
    return _result_json(result)


def _result_json(result: dict[str, Any]) -> Response:
    """The result as JSON, encoded one cell at a time: the C encoder holds the GIL for a whole
    call, and one call over a document of tens of MB would stall every other request of the
    process (health probes included) for as long."""
    rest = _json({key: value for key, value in result.items() if key != "cells"})
    cells = b",".join(_json(cell) for cell in result["cells"])
    tail = b"," + rest[1:] if len(rest) > 2 else b"}"
    return Response(b'{"cells":[' + cells + b"]" + tail, media_type="application/json")


def _json(value: Any) -> bytes:
    """As JSONResponse writes it; NaN and infinities as null."""
    text = json.dumps(finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode()


@router.get(
    "/{job_id}/plot.png",
    summary="Job figure",
    description="The figure `bolab plot` draws from the results: mean test error as a heatmap "
    "over a two-axis grid (log colour scale) or as lines over one axis; `kind=boundary`: an "
    "adaptive refine job's boundary estimates with their intervals against the line axis, the "
    "fitted power law and the theory's slope. 409 while the job has no results, or when the "
    "results cannot be drawn that way.",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **NOT_FOUND, **NOT_READY},
)
async def get_plot(
    job_id: JobId,
    store: StoreDep,
    caller: CallerDep,
    renders: RendersDep,
    kind: Annotated[
        Literal["auto", "heatmap", "lines", "boundary"],
        Query(
            description="auto: a heatmap for two swept axes with many values, else lines; "
            "boundary: a refine job's boundaries"
        ),
    ] = "auto",
    partial: Annotated[
        bool, Query(description="draw a running job's cells finished so far (else 409)")
    ] = False,
    overlay: Annotated[
        bool,
        Query(
            description="add the theory's curves (gamma = c/n, gamma = c alpha^3/d, c from the "
            "spec's theory constants) and the boundaries a refine job found"
        ),
    ] = False,
) -> Response:
    return await render(renders, _plot_response, store, job_id, caller, kind, partial, overlay)


def _plot_response(
    store: JobStore, job_id: str, caller: Caller, kind: str, partial: bool, overlay: bool
) -> Response:
    result = _result(store, _job(store, job_id, caller), caller, partial)
    try:
        png = figures.png(result, kind, overlay)  # type: ignore[arg-type]
    except Exception as exc:
        raise Conflict(f"job {job_id}'s results cannot be drawn: {exc}") from exc
    return Response(png, media_type="image/png")


@router.post(
    "/{job_id}/cancel",
    response_model=JobView,
    summary="Cancel a job",
    description="Stops a queued or running job: it is marked cancelled at once and workers "
    "stop its batches within about a second. Cells finished before stay in the results. "
    "Cancelling a cancelled job is a no-op; a succeeded or failed job answers 409.",
    responses={
        200: {"description": "the job, now cancelled", "links": JOB_LINKS},
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "the job already ended"},
    },
)
def cancel_job(job_id: JobId, store: StoreDep, caller: CallerDep) -> JobView:
    job = _job(store, job_id, caller)
    if job.status in (JobStatus.succeeded, JobStatus.failed):
        raise Conflict(f"job {job_id} already {job.status.value}")
    store.cancel(job_id)
    return get_job(job_id, store, caller)


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a job",
    description="Removes a finished (succeeded, failed or cancelled) job for good: its record, "
    "results, progress and event log, and any webhook delivery still pending. The owner or an "
    "admin may delete it. A queued or running job answers 409: cancel it first. Right after a "
    "cancel a worker may still be stopping the job's batch: 409 with `Retry-After` then. The "
    "`Idempotency-Key` that submitted the job is freed: sent again, it submits a new job.",
    responses={
        204: {"description": "deleted"},
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "the job is queued or running, or stopping"},
    },
)
def delete_job(job_id: JobId, store: StoreDep, caller: CallerDep) -> Response:
    job = _job(store, job_id, caller)
    outcome = store.delete(job_id)
    if outcome == Deletion.missing:  # deleted by another request meanwhile
        raise JobNotFound(job_id)
    if outcome == Deletion.active:
        raise Conflict(f"job {job_id} is {job.status.value}; cancel it first")
    if outcome == Deletion.busy:
        raise Conflict(
            f"job {job_id} is {job.status.value} but a worker is still stopping its batch; "
            "retry shortly",
            {"Retry-After": "1"},
        )
    return Response(status_code=204)
