"""Running a spec: split it into batches of cells that share a shape, train each, assemble.

`bolab run --local` and the Celery worker go through the same two calls, `plan_batches` then
`batch_cells` for each batch, so a job's results equal a local run's on the same spec and seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

import bo_engine
from bo_engine.plan import Batch, assemble_result, plan_batches
from bo_engine.results import summarize_cell
from bo_engine.spec import JobSpec
from bo_engine.train import RunSetup, train_batch


class Cancelled(Exception):
    """Raised by `batch_cells` after a cancel request; finished cells were already reported."""


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available on this worker")
    return torch.device(requested)


def batch_cells(
    spec: JobSpec,
    batch: Batch,
    *,
    device: torch.device | None = None,
    on_runs_done: Callable[[int], None] | None = None,
    on_cell_done: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    cancel_poll_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """Train every run of the batch's cells; return one cell result per cell, in batch order.

    `on_runs_done(k)` is told each time k more runs finish; `on_cell_done(cell)` gets each cell
    result as soon as all of its runs are in. `should_cancel()` is polled about every
    `cancel_poll_seconds` (default train.CANCEL_POLL_SECONDS, 0.2 s); when it answers True, runs
    that are training stop within about 0.1 s with stop_reason "cancelled" (and no baseline),
    runs not yet training never start or stop at their next block of work and report nothing,
    the cells completed by then are reported, and `Cancelled` is raised.
    """
    device = device or resolve_device(spec.device)
    dtype = getattr(torch, spec.dtype)
    setups = [
        RunSetup(cell_index=i, cell=spec.cells[i], seed=spec.cells[i].seed + k)
        for i in batch.cell_indices
        for k in range(spec.cells[i].seeds)
    ]
    pending = {i: spec.cells[i].seeds for i in batch.cell_indices}
    runs_by_cell: dict[int, list[dict[str, Any]]] = {i: [] for i in batch.cell_indices}
    cells: dict[int, dict[str, Any]] = {}

    def finished(setup: RunSetup, run: dict[str, Any]) -> None:
        runs_by_cell[setup.cell_index].append(run)
        pending[setup.cell_index] -= 1
        if pending[setup.cell_index] == 0:
            runs = sorted(runs_by_cell[setup.cell_index], key=lambda r: r["seed"])
            cell = summarize_cell(setup.cell_index, spec.cells[setup.cell_index], runs)
            cells[setup.cell_index] = cell
            if on_cell_done:
                on_cell_done(cell)

    cancelled = train_batch(
        setups,
        device=device,
        dtype=dtype,
        record_every=spec.record_every,
        max_margin_baseline=spec.max_margin_baseline,
        theory=spec.theory,
        on_run_done=finished,
        on_runs_done=on_runs_done,
        should_cancel=should_cancel,
        cancel_poll_seconds=cancel_poll_seconds,
    )
    if cancelled:
        raise Cancelled(f"batch {batch.index} cancelled")
    return [cells[i] for i in batch.cell_indices]


def engine_info(device: torch.device, dtype: str, wall_seconds: float) -> dict[str, Any]:
    return {
        "version": bo_engine.__version__,
        "torch": torch.__version__,
        "device": str(device),
        "dtype": dtype,
        "wall_seconds": wall_seconds,
    }


def run_spec(
    spec: JobSpec,
    *,
    device: torch.device | None = None,
    on_runs_done: Callable[[int], None] | None = None,
    on_cell_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run a whole spec in this process (the `bolab run --local` path)."""
    started = time.perf_counter()
    device = device or resolve_device(spec.device)
    cells: list[dict[str, Any]] = []
    for batch in plan_batches(spec):
        cells += batch_cells(
            spec, batch, device=device, on_runs_done=on_runs_done, on_cell_done=on_cell_done
        )
    return assemble_result(
        spec, cells, engine_info(device, spec.dtype, time.perf_counter() - started)
    )
