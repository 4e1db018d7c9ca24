"""Errors the routes raise, and the handlers that answer them as JSON `{"detail": ...}`.

Every failure has a 4xx or 503 answer here; the catch-all keeps even a bug's answer JSON.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from service.schemas import finite

log = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class JobNotFound(ApiError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        shown = job_id if len(job_id) <= 64 else f"{job_id[:64]}..."
        super().__init__(f"no job with id {shown!r}")


class Conflict(ApiError):
    status_code = 409


class Unavailable(ApiError):
    status_code = 503


# Redis reached its maxmemory: it refuses writes and evicts nothing (noeviction).
STORE_FULL = (
    "the job store is full (Redis reached its maxmemory): the request was not carried out; "
    "stored jobs can still be read. Ask the lab's admin to free space or raise "
    "BOLAB_REDIS_MAXMEMORY"
)


def store_full(exc: BaseException) -> bool:
    """Is `exc` Redis refusing a write for want of memory? Inside a Lua script the refusal
    comes wrapped in the script's error, so the text decides, not only the class."""
    wrapped = "OOM command not allowed" in str(exc)
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or wrapped


class TooManyJobs(ApiError):
    status_code = 429


class TooManyStreams(ApiError):
    status_code = 429


class UnsupportedMediaType(ApiError):
    status_code = 415


class NotImplementedByServer(ApiError):
    """This deployment lacks an optional part the request needs (the detail names it)."""

    status_code = 501


def _answer(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path. (Starlette's 405 names only the methods of
    the first route that matched the path, e.g. POST alone for GET and POST /v1/jobs.)"""
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
        )
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed(app, request))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        for error in exc.errors():
            if tuple(error["loc"]) == ("path", "job_id"):  # cannot be an id: no such job
                return _answer(404, JobNotFound(str(error["input"])).detail)
        # FastAPI's own handler echoes the offending input, and an input of NaN or 1e999 cannot
        # be written as JSON: it would turn a 422 into a 500.
        return JSONResponse({"detail": finite(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(redis.RedisError)
    async def store_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        if store_full(exc):
            log.warning("job store full: %s", exc)
            return _answer(503, STORE_FULL)
        log.warning("job store unavailable: %s", exc)
        return _answer(503, "job store (Redis) unavailable, try again shortly")

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("unhandled error", exc_info=exc)
        return _answer(500, "internal error; the service log has the details")
