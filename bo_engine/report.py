"""How a training path hands on its finished runs and asks whether to stop (`Reporter`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bo_engine.chunks import Checkpoint, Stopped
from bo_engine.plan import RunSetup
from bo_engine.products import RunData

# What a training path makes of a finished run: (setup, its products, C (width, n) with
# W = W(0) + C X, the outputs f the stop rule saw, steps, stop reason, trajectory, checkpoint of
# the baseline) -> the run's result (`train_batch` builds it).
ResultOf = Callable[
    [RunSetup, RunData, torch.Tensor, torch.Tensor, int, str, list | None, Checkpoint],
    dict[str, Any],
]


@dataclass
class Reporter:
    """How a training path hands on its finished runs and asks whether to stop. Both paths call
    it on the thread that called `train_batch` only."""

    result_of: ResultOf
    on_run_done: Callable[[RunSetup, dict[str, Any]], None]
    on_runs_done: Callable[[int], None] | None  # told k each time k more runs finished
    should_cancel: Callable[[], bool] | None
    poll_seconds: float  # should_cancel is asked at most this often
    last_poll: float = field(default_factory=time.monotonic)

    def report(self, finished: list[tuple[RunSetup, dict[str, Any]]]) -> None:
        for setup, run in finished:
            self.on_run_done(setup, run)
        if finished and self.on_runs_done:
            self.on_runs_done(len(finished))

    def cancel_requested(self) -> bool:
        if self.should_cancel is None or time.monotonic() - self.last_poll < self.poll_seconds:
            return False
        self.last_poll = time.monotonic()
        return self.should_cancel()

    def check(self) -> None:
        """A checkpoint (`bo_engine.chunks`) for work on the reporting thread: raises `Stopped`
        when a cancel is asked."""
        if self.cancel_requested():
            raise Stopped
