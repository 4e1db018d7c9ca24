"""Limits that keep one request or one job from taking the lab down.

- Request bodies over `BOLAB_MAX_BODY_BYTES`: 413, before any parsing (`BodyLimit`).
- Per job: bounds on n, d, width, n_test, seeds, max_steps and the number of grid cells, checked
  on the raw body *before* the spec expands its grid (a hostile 10^8-cell grid never expands);
  then an estimated cost and per-batch memory (`JobBounds`). Over a bound: 422 naming the bound
  and the estimate.
- Per key: at most `BOLAB_MAX_ACTIVE_JOBS` queued+running jobs (429, checked atomically by the
  job store when the job is created).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Request
from pydantic import AfterValidator, BeforeValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bo_engine.plan import plan_batches
from bo_engine.spec import Cell, JobSpec, uses_gram_form
from service.errors import UnsupportedMediaType
from worker.settings import Settings, get_settings

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
DTYPE_BYTES = {"float32": 4, "float64": 8}


class BodyLimit:
    """ASGI middleware: a body longer than `max_bytes` is answered 413 and never parsed.

    The body is read here (at most `max_bytes` + one chunk) and replayed to the app, so chunked
    uploads without a Content-Length are limited too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes or get_settings().max_body_bytes
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


def require_json(request: Request) -> None:
    """The job body is JSON: another declared content type answers 415, not a puzzling 422."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the JobSpec as JSON with `Content-Type: application/json` (got {kind!r})"
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if not isinstance(value, int) or value < 2**1000 else math.inf


def precheck(data: Any, settings: Settings | None = None) -> Any:
    """Bounds on the raw body: sizes, grid cells. Runs before the spec expands its grid."""
    if not isinstance(data, dict):
        return data  # the spec's own validation says what is wrong
    s = settings or get_settings()
    grid = data.get("grid") if isinstance(data.get("grid"), dict) else {}
    problems = []
    for field, setting in BOUNDED.items():
        bound = getattr(s, setting)
        values = [data.get(field), *_axis(grid, field)]
        worst = max((v for v in map(_number, values) if v is not None), default=None)
        if worst is not None and worst > bound:
            problems.append(f"{field} = {_show(worst)} is over the bound {setting} = {bound}")
    ratio = max((v for v in map(_number, _axis(grid, "d_over_n")) if v is not None), default=None)
    if ratio is not None and ratio > s.max_d:
        problems.append(f"d_over_n = {_show(ratio)} is over the bound max_d = {s.max_d}")
    seed = _number(data.get("seed"))
    seeds = [v for v in map(_number, _axis(grid, "seed")) if v is not None]
    if max([seed or 0, *seeds]) > MAX_SEED:
        problems.append(f"seed is over the bound {MAX_SEED}")
    cells = math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values())
    if cells > s.max_cells:
        problems.append(f"grid has {cells} cells, over the bound max_cells = {s.max_cells}")
    if problems:
        raise ValueError("; ".join(problems))
    return data


def _axis(grid: dict[str, Any], name: str) -> list[Any]:
    values = grid.get(name)
    return values if isinstance(values, list) else []


def step_work(cell: Cell) -> float:
    """Multiply-adds of one GD step of one run: O(width n^2) in the Gram form, else width n d."""
    return cell.width * cell.n * (cell.n if uses_gram_form(cell.n, cell.d) else cell.d)


def estimate_cost(spec: JobSpec) -> float:
    """Work units of the whole job if every run used all of max_steps (an upper estimate),
    plus building the data and Gram matrices once per run."""
    return sum(
        c.seeds * (c.max_steps * step_work(c) + (c.n + c.n_test) * c.d * c.width)
        for c in spec.cells
    )


def estimate_batch_bytes(spec: JobSpec) -> int:
    """The largest batch's tensors: per run, data (n + n_test) x d, Gram blocks (n + n_test) x n
    and pre-activations (n + n_test) x width, padded to the batch's largest n (Gram form)."""
    worst = 0
    for batch in plan_batches(spec):
        cells = [spec.cells[i] for i in batch.cell_indices]
        n = max(c.n for c in cells)
        elems = sum(c.seeds * (n + c.n_test) * (c.d + n + 2 * c.width) for c in cells)
        worst = max(worst, elems * DTYPE_BYTES[spec.dtype])
    return worst


def check_costs(spec: JobSpec, settings: Settings | None = None) -> JobSpec:
    s = settings or get_settings()
    problems = []
    cost = estimate_cost(spec)
    if cost > s.max_cost:
        problems.append(
            f"estimated cost {cost:.3g} work units (runs x max_steps x per-step work) is over "
            f"the bound max_cost = {s.max_cost:.3g}; lower max_steps, seeds or the grid"
        )
    memory = estimate_batch_bytes(spec)
    if memory > s.max_batch_bytes:
        problems.append(
            f"estimated memory of one batch {memory / 2**30:.3g} GiB is over the bound "
            f"max_batch_bytes = {s.max_batch_bytes / 2**30:.3g} GiB"
        )
    if problems:
        raise ValueError("; ".join(problems))
    return spec


def _show(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else "a huge number"


# The body type of POST /v1/jobs: the JobSpec schema, with the bounds around its validation.
BoundedJobSpec = Annotated[JobSpec, BeforeValidator(precheck), AfterValidator(check_costs)]
