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
from bo_engine.adaptive import Request, adaptive_summary, add_runs, plan_round
from bo_engine.plan import MAX_RUNS_PER_BATCH, Batch, assemble_result, plan_batches
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
    """Run a whole spec in this process (the `bolab run --local` path); an adaptive spec runs
    round by round (`run_adaptive`)."""
    if spec.is_adaptive:
        return run_adaptive(spec, device=device, on_runs_done=on_runs_done)
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


def train_requests(
    spec: JobSpec,
    requests: list[Request],
    *,
    device: torch.device,
    on_runs_done: Callable[[int], None] | None = None,
) -> list[list[dict[str, Any]]]:
    """Train every request's runs (requests of one shape key in batches of at most
    MAX_RUNS_PER_BATCH runs); the runs of each request, in request order, sorted by seed."""
    setups = [
        RunSetup(cell_index=i, cell=r.cell, seed=r.cell.seed + k)
        for i, r in enumerate(requests)
        for k in range(r.cell.seeds)
    ]
    groups: dict[tuple[Any, ...], list[RunSetup]] = {}
    for setup in setups:
        groups.setdefault(setup.cell.shape_key(), []).append(setup)
    runs: list[list[dict[str, Any]]] = [[] for _ in requests]
    for group in groups.values():
        for start in range(0, len(group), MAX_RUNS_PER_BATCH):
            train_batch(
                group[start : start + MAX_RUNS_PER_BATCH],
                device=device,
                dtype=getattr(torch, spec.dtype),
                record_every=spec.record_every,
                max_margin_baseline=spec.max_margin_baseline,
                theory=spec.theory,
                on_run_done=lambda setup, run: runs[setup.cell_index].append(run),
                on_runs_done=on_runs_done,
            )
    return [sorted(r, key=lambda run: run["seed"]) for r in runs]


def run_adaptive(
    spec: JobSpec,
    *,
    device: torch.device | None = None,
    on_runs_done: Callable[[int], None] | None = None,
    on_round: Callable[[int, list[Request]], None] | None = None,
) -> dict[str, Any]:
    """Run an adaptive spec in this process: plan a round from the cells so far
    (`bo_engine.adaptive.plan_round`), train it, store its runs, until the plan is empty.
    `on_round(k, requests)` is told each round before it trains. The result adds `rounds` (cells
    and runs each round asked for) and, with a refine section, `boundaries` and `scaling`."""
    started = time.perf_counter()
    device = device or resolve_device(spec.device)
    cells: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    while requests := plan_round(spec, cells):
        if on_round:
            on_round(len(rounds), requests)
        round_started = time.perf_counter()
        trained = train_requests(spec, requests, device=device, on_runs_done=on_runs_done)
        for request, runs in zip(requests, trained, strict=True):
            cells = add_runs(spec, cells, request, runs)
        rounds.append({
            "round": len(rounds),
            "cells": len(requests),
            "runs": sum(r.cell.seeds for r in requests),
            "wall_seconds": time.perf_counter() - round_started,
        })  # fmt: skip
    engine = engine_info(device, spec.dtype, time.perf_counter() - started)
    result = assemble_result(spec, cells, engine)
    return {**result, "rounds": rounds, **adaptive_summary(spec, cells)}
