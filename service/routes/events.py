"""`GET /v1/jobs/{id}/events`: the job's event log as Server-Sent Events.

Served from the job's Redis Stream (`jobmodel.events`) with XREAD BLOCK: each SSE event carries
the stream entry id as `id:`, so `Last-Event-ID` (sent by browsers on reconnect, or by any
client) resumes right after the last event seen, with nothing lost or repeated. The stream
closes after the `end` event. Should a process die between a job's terminal status and its
`end` event, the route notices the terminal status whenever the stream is idle and ends anyway
(so does a resume after the `end`).

Each open stream takes a slot of `service.capacity` (per key and per process) and holds one
connection of the streams' own Redis pool; it gives both back however it ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import WithJsonSchema

from jobmodel import events
from jobmodel.live import LiveView
from jobmodel.store import TERMINAL
from service.auth import CallerDep
from service.capacity import SlotStreamingResponse, StreamSlotsDep
from service.errors import JobNotFound
from service.schemas import ErrorBody, JobId, finite

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

END_GRACE_MS = 2000
# A stream entry id: milliseconds-sequence, each part a 64-bit unsigned number in Redis. 19
# digits keep every id the pattern admits below 2^64 (Redis refuses larger ones mid-stream).
EVENT_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"
# Empty, as the SSE standard has it, means no event seen yet: start at the first.
EVENT_ID_OR_EMPTY = r"^([0-9]{1,19}-[0-9]{1,19})?$"
RESUME = "resume after this event id (empty: from the first event)"
EXAMPLE = (
    'retry: 1000\n\nid: 1735732800000-0\nevent: status\ndata: {"status":"queued"}\n\n'
    'id: 1735732800150-0\nevent: progress\ndata: {"runs_done":5,"runs_total":10,"fraction":0.5}'
    '\n\nid: 1735732800400-0\nevent: cell\ndata: {"index":0,"n":50,"test_error_mean":0.01}\n\n'
    'id: 1735732800900-0\nevent: end\ndata: {"status":"succeeded","error":null,...}\n\n'
)


def _sse(entry_id: str, kind: str, data: str) -> str:
    # Python's json reads the NaN a metric may hold; browsers' JSON.parse would not.
    text = json.dumps(finite(json.loads(data)), separators=(",", ":"))
    return f"id: {entry_id}\nevent: {kind}\ndata: {text}\n\n"


async def _follow(request: Request, job_id: str, after: str) -> AsyncIterator[str]:
    live: LiveView = request.app.state.live
    keepalive_ms = int(request.app.state.settings.sse_keepalive_s * 1000)
    yield "retry: 1000\n\n"  # browsers reconnect after 1 s, sending Last-Event-ID
    last, idle = after, False
    while True:
        # Without blocking first: an idle stream is checked for a job that already ended.
        reply = await live.events_after(job_id, last, keepalive_ms if idle else None)
        if not reply and not idle:
            raw = await live.record(job_id)
            if not raw or raw.get("status") in TERMINAL:
                # Its `end` follows the status change within milliseconds (or has landed since
                # the read above); none within END_GRACE_MS: the process that ended it died.
                reply = await live.events_after(job_id, last, END_GRACE_MS)
                if not reply:
                    end = {"status": raw.get("status", "unknown"), "error": raw.get("error")}
                    yield _sse(last, events.END, json.dumps(end))
                    return
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                yield _sse(entry_id, fields["event"], fields["data"])
                if fields["event"] == events.END:
                    return
        if idle and not reply:
            yield ": keep-alive\n\n"  # proxies and clients see the connection is alive
            idle = False  # next round: check the job's status again
        else:
            idle = not reply


@router.get(
    "/{job_id}/events",
    summary="Job events (SSE)",
    description="Server-Sent Events: `status` (queued, running), `progress` (runs done), `cell` "
    "(each cell's summary row as it finishes), then `end` (the terminal status) and the stream "
    "closes. Every event has an `id:`; send the last one as `Last-Event-ID` (header, or the "
    "`last_event_id` query parameter) to resume after it without loss. Without it the stream "
    "starts at the job's first event.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": EXAMPLE}}},
        404: {"model": ErrorBody, "description": "no job with this id"},
        429: {"model": ErrorBody, "description": "this key has the most event streams allowed"},
        503: {
            "model": ErrorBody,
            "description": "this API process serves the most event streams it allows, or "
            "Redis is unreachable",
        },
    },
)
async def job_events(
    request: Request,
    caller: CallerDep,
    slots: StreamSlotsDep,
    job_id: JobId,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", pattern=EVENT_ID_OR_EMPTY, description=RESUME),
        # A header is a string or absent, never null: say so (a null in the document reads
        # as the text "null" to generators, which the pattern then refuses).
        WithJsonSchema({"type": "string", "pattern": EVENT_ID_OR_EMPTY, "description": RESUME}),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            pattern=EVENT_ID,
            description="same, for clients that cannot set headers",
        ),
    ] = None,
) -> StreamingResponse:
    slot = slots.acquire(caller.owner)  # over a cap: answered before any Redis call
    try:
        owner = await request.app.state.live.owner(job_id)
        if owner is None or not caller.may_see(owner):
            raise JobNotFound(job_id)
    except BaseException:
        slot.release()
        raise
    return SlotStreamingResponse(
        _follow(request, job_id, last_event_id or after or "0-0"),
        slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
