"""What one API process serves at once, so that no caller can take all of it.

- Event streams: an open stream holds a connection of the streams' own Redis pool (XREAD BLOCK)
  for as long as it is open. A key may hold `BOLAB_MAX_STREAMS_PER_KEY` streams (more: 429) and
  the process `BOLAB_MAX_STREAMS` (more: 503), both with `Retry-After`; that pool has exactly
  `BOLAB_MAX_STREAMS` connections, so the caps never let it run dry, and short Redis calls use
  a pool of their own (`service.live`).
- Result renders: results and figures are built in threads (JSON of tens of MB, matplotlib),
  at most `BOLAB_MAX_RESULT_RENDERS` at once through a limiter of their own, so they never hold
  every thread of the pool that the other sync routes share. The probes need no thread at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.errors import TooManyStreams, Unavailable

T = TypeVar("T")
RETRY_AFTER_S = 5  # a hint: streams end when their job ends, or when their client goes away


class StreamSlots:
    """Open event streams of this process, per owner. Used on the event loop only: no lock."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key, self.total = per_key, total
        self.open: Counter[str] = Counter()

    def acquire(self, owner: str) -> StreamSlot:
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.open[owner] >= self.per_key:
            raise TooManyStreams(
                f"{self.open[owner]} event streams of {owner!r} are open, the most allowed "
                f"(BOLAB_MAX_STREAMS_PER_KEY = {self.per_key}); close one or retry later",
                retry,
            )
        if self.open.total() >= self.total:
            raise Unavailable(
                f"this API process serves the most event streams it allows "
                f"(BOLAB_MAX_STREAMS = {self.total}); retry later",
                retry,
            )
        self.open[owner] += 1
        return StreamSlot(self, owner)


class StreamSlot:
    """One open stream; `release` gives it back (again: no-op)."""

    def __init__(self, slots: StreamSlots, owner: str) -> None:
        self.slots, self.owner, self.held = slots, owner, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.open[self.owner] -= 1
            if self.slots.open[self.owner] <= 0:
                del self.slots.open[self.owner]


class SlotStreamingResponse(StreamingResponse):
    """Gives its slot back however the stream ends: after its last event, when the client goes
    away (the write fails or the server sees the disconnect), or on an error."""

    def __init__(self, content: object, slot: StreamSlot, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


def get_stream_slots(request: Request) -> StreamSlots:
    return request.app.state.stream_slots


def get_renders(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.renders


async def render(limiter: anyio.CapacityLimiter, build: Callable[..., T], *args: object) -> T:
    """`build(*args)` in a worker thread, at most the limiter's tokens of them at once."""
    return await anyio.to_thread.run_sync(partial(build, *args), limiter=limiter)


StreamSlotsDep = Annotated[StreamSlots, Depends(get_stream_slots)]
RendersDep = Annotated[anyio.CapacityLimiter, Depends(get_renders)]
