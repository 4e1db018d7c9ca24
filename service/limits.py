"""Limits that keep one request or one job from taking the lab down.

- Request bodies over `BOLAB_MAX_BODY_BYTES`: 413, before any parsing (`BodyLimit`).
- Per job: the number of grid cells, checked on the raw body *before* the spec expands its grid
  (a hostile 10^8-cell grid never expands); bounds on n, d, width, n_test, seeds, max_steps and
  seed, checked on the raw body and again on every resolved cell, after pydantic's coercion, so
  they hold for any JSON spelling of a number ("6000", 6000.0, 6e3, inside grids); then the cost
  model's estimates (`bo_engine.cost`): work, peak memory of a batch, work of one stage no cancel
  can interrupt,
  trajectory points per run and result size. Over a bound: 422 naming every bound broken and
  its value (a dry run lists them instead, `violations`).
- Per key: at most `BOLAB_MAX_ACTIVE_JOBS` queued+running jobs (429, checked atomically by the
  job store when the job is created).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bo_engine.cost import JobCost, job_cost
from bo_engine.rounds import SpecView, budget_spec
from bo_engine.spec import JobSpec
from jobmodel.settings import Settings
from service.errors import UnsupportedMediaType

# spec field -> the setting that bounds it (also the value of every grid axis of that name)
BOUNDED = {
    "n": "max_n",
    "d": "max_d",
    "width": "max_width",
    "n_test": "max_n_test",
    "seeds": "max_seeds",
    "max_steps": "max_steps",
}
MAX_SEED = 2**62  # torch seeds are 64-bit; seed + run offset must stay below that


class BodyLimit:
    """ASGI middleware: a body longer than `max_bytes` is answered 413 and never parsed.

    The body is read here (at most `max_bytes` + one chunk) and replayed to the app, so chunked
    uploads without a Content-Length are limited too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_big = declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        more = not too_big
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False) and size <= limit
        if too_big or size > limit:
            await _reject(send, limit)
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the app waits for a disconnect after the body
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reject(send: Send, limit: int) -> None:
    from starlette.responses import JSONResponse

    response = JSONResponse(
        {"detail": f"request body larger than {limit} bytes (BOLAB_MAX_BODY_BYTES)"},
        status_code=413,
        headers={"Connection": "close"},
    )
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def require_json(request: Request) -> None:
    """The job body is JSON: another declared content type answers 415, not a puzzling 422.
    A coroutine: FastAPI would run a plain function in its thread pool, a hop per request."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the JobSpec as JSON with `Content-Type: application/json` (got {kind!r})"
        )


def _number(value: Any) -> float | None:
    """The number a raw JSON value stands for once pydantic coerces it, or None for a
    non-number. Numeric strings count ("6000", " 6e3 "): the spec accepts them in lax mode."""
    if isinstance(value, str):
        try:
            value = float(value.strip().replace("_", ""))
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return float(value) if value < 2**1000 else math.inf
    return value if math.isfinite(value) else math.inf


def precheck(data: Any, s: Settings) -> Any:
    """Bounds on the raw body, before the spec expands its grid: the number of grid cells, and
    values so large that resolving a cell could overflow. `violations` repeats the size bounds
    on the resolved cells, after pydantic's coercion, whatever the JSON spelling."""
    if not isinstance(data, dict):
        return data  # the spec's own validation says what is wrong
    grid = data.get("grid") if isinstance(data.get("grid"), dict) else {}
    values = {field: [data.get(field), *_axis(grid, field)] for field in BOUNDED}
    values["d_over_n"] = _axis(grid, "d_over_n")  # d = n d_over_n >= d_over_n
    values["seed"] = [data.get("seed"), *_axis(grid, "seed")]
    problems = _over_bounds(values, s)
    cells = math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values())
    if cells > s.max_cells:
        problems.append(f"grid has {cells} cells, over the bound max_cells = {s.max_cells}")
    if problems:
        raise ValueError("; ".join(problems))
    return data


def _axis(grid: dict[str, Any], name: str) -> list[Any]:
    values = grid.get(name)
    return values if isinstance(values, list) else []


def _over_bounds(values: dict[str, list[Any]], s: Settings) -> list[str]:
    """One message per bounded field whose largest value is over its bound."""
    problems = []
    for field, raw in values.items():
        worst = max((v for v in map(_number, raw) if v is not None), default=None)
        setting, bound = _bound(field, s)
        if worst is not None and worst > bound:
            problems.append(f"{field} = {_show(worst)} is over the bound {setting} = {bound}")
    return problems


def _bound(field: str, s: Settings) -> tuple[str, float]:
    """The setting that bounds a field's values, and its value."""
    if field == "seed":
        return "max_seed", MAX_SEED
    setting = "max_d" if field == "d_over_n" else BOUNDED[field]
    return setting, getattr(s, setting)


def priced(spec: JobSpec) -> JobSpec | SpecView:
    """What admission and the estimate price: the spec's cells, or, for an adaptive spec,
    its budget (`bo_engine.rounds.budget_spec`: every line at its most cells and seeds)."""
    return budget_spec(spec) if spec.is_adaptive else spec


def violations(
    spec: JobSpec, s: Settings, cached_runs: Mapping[int, int] | None = None
) -> list[str]:
    """Every bound the resolved spec breaks, one message each: the size bounds on every cell
    (the values the engine will use), then the cost model's bounds on work, memory, one step
    and the result (`bo_engine.cost`). The work counts only the runs to train: `cached_runs`
    (cell index -> runs of it the run cache holds) cost nothing. An adaptive spec is priced
    by its budget (`priced`)."""
    spec = priced(spec)  # type: ignore[assignment]
    values: dict[str, list[Any]] = {field: [] for field in BOUNDED}
    values["seed"] = []
    for cell in spec.cells:
        for field in BOUNDED:
            values[field].append(getattr(cell, field))
        values["seed"].append(cell.seed + cell.seeds - 1)
    cost = job_cost(spec, parallel_runs=s.max_parallel_runs, cached_runs=cached_runs)
    return _over_bounds(values, s) + _over_costs(cost, s)


def over_max_cost(spec: JobSpec, s: Settings) -> bool:
    """Whether the work of all the job's runs is over max_cost: only then can the runs the
    cache holds change the verdict, so only then is the cache read."""
    return job_cost(priced(spec), parallel_runs=s.max_parallel_runs).work > s.max_cost  # type: ignore[arg-type]


def over_bounds_error(problems: list[str], body: Any) -> RequestValidationError:
    """The 422 of a spec over bounds, as the body's validation reports it."""
    message = "Value error, " + "; ".join(problems)
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body",), "msg": message, "input": body}]
    )


def _over_costs(cost: JobCost, s: Settings) -> list[str]:
    checks = [
        (cost.work, s.max_cost, "estimated work", "max_cost", "units", "lower max_steps, seeds "
         "or the grid"),
        (cost.peak_batch_bytes, s.max_batch_bytes, "estimated peak memory of one batch",
         "max_batch_bytes", "bytes", "lower n, d, width, n_test or seeds"),
        (cost.max_stage_work, s.max_stage_work, "estimated work of one uninterruptible stage "
         "(a GD step, or the baseline's NNLS)", "max_stage_work", "units", "lower width or n, "
         "or set max_margin_baseline to false"),
        (cost.max_trajectory_points, s.max_trajectory_points, "trajectory points per run",
         "max_trajectory_points", "points", "raise record_every or lower max_steps"),
        (cost.result_bytes, s.max_result_bytes, "estimated result size", "max_result_bytes",
         "bytes", "lower seeds, the grid or the trajectory"),
    ]
    return [
        f"{what} {value:.3g} {unit} is over the bound {name} = {bound:.3g}; {hint}"
        for value, bound, what, name, unit, hint in checks
        if value > bound
    ]


def _show(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else "a huge number"


def prechecked_spec(settings: Settings) -> Any:
    """The body type of POST /v1/jobs: the JobSpec schema after `precheck` (a grid too big to
    expand is refused before it is). The route
    collects the resolved spec's `violations`: a dry run lists them, a submit answers them as
    `over_bounds_error`."""
    return Annotated[
        JobSpec,
        BeforeValidator(lambda data: precheck(data, settings)),
    ]
