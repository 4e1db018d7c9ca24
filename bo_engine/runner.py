"""Running a spec: split it into batches of cells that share a shape, train each, assemble.

`bolab run --local` and the Celery worker go through the same two calls, `plan_batches` then
`batch_cells` for each batch, so a job's results equal a local run's on the same spec and seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch

import bo_engine
from bo_engine.adaptive import Request, add_runs, plan_round
from bo_engine.plan import MAX_RUNS_PER_BATCH, Batch, assemble_result, plan_batches
from bo_engine.results import summarize_cell
from bo_engine.runcache import (
    RunRef,
    RunStore,
    cacheable,
    run_key,
    run_refs,
    served,
    stored,
    training_path,
)
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


Slot = tuple[int, int]  # (cell index, seed): one run of a job


def batch_cells(
    spec: JobSpec,
    batch: Batch,
    *,
    device: torch.device | None = None,
    known: Mapping[Slot, dict[str, Any]] | None = None,
    skip: Collection[Slot] = (),
    source_job: str | None = None,
    on_run_done: Callable[[Slot, dict[str, Any]], None] | None = None,
    on_runs_done: Callable[[int], None] | None = None,
    on_cell_done: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    cancel_poll_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """Train the runs of the batch's cells; return one cell result per cell completed, in
    batch order.

    Runs in `known` (a cache's hits, say) are taken as they are and runs in `skip` are left
    out: only the others train, and a cell with a skipped run is neither reported nor returned.
    A trained run says `cached: false` and `source_job` (the job training it, None locally).
    `on_run_done(slot, run)` gets each trained run; `on_runs_done(k)` is told each time k more
    runs finish training; `on_cell_done(cell)` gets each cell result as soon as all of its runs
    are in. `should_cancel()` is polled about every `cancel_poll_seconds` (default
    train.CANCEL_POLL_SECONDS, 0.2 s); when it answers True, runs that are training stop within
    about 0.1 s with stop_reason "cancelled" (and no baseline), runs not yet training never
    start or stop at their next block of work and report nothing, the cells completed by then
    are reported, and `Cancelled` is raised.
    """
    device = device or resolve_device(spec.device)
    have: dict[Slot, dict[str, Any]] = dict(known or {})
    slots = {i: _slots(spec, i) for i in batch.cell_indices}
    to_train = [s for i in batch.cell_indices for s in slots[i] if s not in have and s not in skip]
    completes = [i for i in batch.cell_indices if not any(s in skip for s in slots[i])]
    cells: dict[int, dict[str, Any]] = {}

    def close_if_complete(i: int) -> None:
        if i in completes and i not in cells and all(s in have for s in slots[i]):
            cells[i] = summarize_cell(i, spec.cells[i], [have[s] for s in slots[i]])
            if on_cell_done:
                on_cell_done(cells[i])

    def finished(setup: RunSetup, run: dict[str, Any]) -> None:
        slot = (setup.cell_index, setup.seed)
        have[slot] = {**run, "cached": False, "source_job": source_job}
        if on_run_done:
            on_run_done(slot, have[slot])
        close_if_complete(setup.cell_index)

    for i in completes:  # cells with nothing to train are in at once
        close_if_complete(i)
    setups = [RunSetup(cell_index=i, cell=spec.cells[i], seed=seed) for i, seed in to_train]
    cancelled = bool(setups) and _train(
        spec,
        setups,
        device=device,
        on_run_done=finished,
        on_runs_done=on_runs_done,
        should_cancel=should_cancel,
        cancel_poll_seconds=cancel_poll_seconds,
    )
    if cancelled:
        raise Cancelled(f"batch {batch.index} cancelled")
    return [cells[i] for i in batch.cell_indices if i in cells]


def _train(spec: JobSpec, setups: list[RunSetup], *, device: torch.device, **calls: Any) -> bool:
    """`train_batch` under the spec's per-job settings (dtype, trajectory, baseline, theory);
    `calls` are its callbacks. True if cancelled."""
    return train_batch(
        setups,
        device=device,
        dtype=getattr(torch, spec.dtype),
        record_every=spec.record_every,
        max_margin_baseline=spec.max_margin_baseline,
        theory=spec.theory,
        **calls,
    )


def _slots(spec: JobSpec, cell_index: int) -> list[Slot]:
    cell = spec.cells[cell_index]
    return [(cell_index, seed) for seed in range(cell.seed, cell.seed + cell.seeds)]


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
    cache: RunStore | None = None,
    on_runs_done: Callable[[int], None] | None = None,
    on_cell_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run a whole spec in this process (the `bolab run --local` path). With a `cache` (and
    `spec.cache` on), runs it holds are served from it and only the others train; every run
    trained to its stop is written to it. An adaptive spec runs round by round
    (`run_adaptive`)."""
    if spec.is_adaptive:
        return run_adaptive(spec, device=device, cache=cache, on_runs_done=on_runs_done)
    started = time.perf_counter()
    device = device or resolve_device(spec.device)
    cells: list[dict[str, Any]] = []
    for batch in plan_batches(spec):
        refs = run_refs(spec, batch.cell_indices, device.type) if cache else []
        known = _cached_runs(spec, refs, cache) if cache and spec.cache else {}
        if known and on_runs_done:
            on_runs_done(len(known))
        cells += batch_cells(
            spec,
            batch,
            device=device,
            known=known,
            on_run_done=_cache_writer(refs, cache) if cache else None,
            on_runs_done=on_runs_done,
            on_cell_done=on_cell_done,
        )
    return assemble_result(
        spec, cells, engine_info(device, spec.dtype, time.perf_counter() - started)
    )


def _cached_runs(spec: JobSpec, refs: list[RunRef], cache: RunStore) -> dict[Slot, dict[str, Any]]:
    found = cache.get_many([r.key for r in refs])
    return {
        r.slot: served(found[r.key], spec.cells[r.cell_index], spec, None)
        for r in refs
        if r.key in found
    }


def _cache_writer(refs: list[RunRef], cache: RunStore) -> Callable[[Slot, dict[str, Any]], None]:
    key_of = {r.slot: r.key for r in refs}

    def write(slot: Slot, run: dict[str, Any]) -> None:
        if cacheable(run):
            cache.put(key_of[slot], stored(run))

    return write


def train_requests(
    spec: JobSpec,
    requests: list[Request],
    *,
    device: torch.device,
    cache: RunStore | None = None,
    on_runs_done: Callable[[int], None] | None = None,
) -> list[list[dict[str, Any]]]:
    """The runs of each request, in request order, sorted by seed: served from `cache` where it
    holds them (and `spec.cache` is on), the others trained (one shape key at a time, in
    batches of at most MAX_RUNS_PER_BATCH runs) and written to it."""
    setups = [
        RunSetup(cell_index=i, cell=r.cell, seed=r.cell.seed + k)
        for i, r in enumerate(requests)
        for k in range(r.cell.seeds)
    ]
    keys = {(s.cell_index, s.seed): _run_key(spec, s, device) for s in setups} if cache else {}
    found = cache.get_many(list(keys.values())) if cache and spec.cache else {}
    runs: list[list[dict[str, Any]]] = [[] for _ in requests]
    for setup in setups:
        if keys.get((setup.cell_index, setup.seed)) in found:
            run = found[keys[(setup.cell_index, setup.seed)]]
            runs[setup.cell_index].append(served(run, setup.cell, spec, None))
    if found and on_runs_done:
        on_runs_done(sum(map(len, runs)))

    def finished(setup: RunSetup, run: dict[str, Any]) -> None:
        runs[setup.cell_index].append({**run, "cached": False, "source_job": None})
        if cache and cacheable(run):
            cache.put(keys[(setup.cell_index, setup.seed)], stored(run))

    groups: dict[tuple[Any, ...], list[RunSetup]] = {}
    for setup in setups:
        if keys.get((setup.cell_index, setup.seed)) not in found:
            groups.setdefault(setup.cell.shape_key(), []).append(setup)
    for group in groups.values():
        for start in range(0, len(group), MAX_RUNS_PER_BATCH):
            batch = group[start : start + MAX_RUNS_PER_BATCH]
            _train(spec, batch, device=device, on_run_done=finished, on_runs_done=on_runs_done)
    return [sorted(r, key=lambda run: run["seed"]) for r in runs]


def _run_key(spec: JobSpec, setup: RunSetup, device: torch.device) -> str:
    return run_key(
        setup.cell,
        setup.seed,
        dtype=spec.dtype,
        path=training_path(setup.cell, device.type),
        record_every=spec.record_every,
        max_margin_baseline=spec.max_margin_baseline,
    )


def run_adaptive(
    spec: JobSpec,
    *,
    device: torch.device | None = None,
    cache: RunStore | None = None,
    on_runs_done: Callable[[int], None] | None = None,
    on_round: Callable[[int, list[Request]], None] | None = None,
) -> dict[str, Any]:
    """Run an adaptive spec in this process: plan a round from the cells so far
    (`bo_engine.adaptive.plan_round`), train it (`train_requests`, through `cache` if given),
    store its runs, until the plan is empty. `on_round(k, requests)` is told each round before
    it trains. The result adds `rounds` (cells and runs each round asked for) and, with a refine
    section, `refine`, `boundaries` and `scaling`."""
    started = time.perf_counter()
    device = device or resolve_device(spec.device)
    cells: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    while requests := plan_round(spec, cells):
        if on_round:
            on_round(len(rounds), requests)
        round_started = time.perf_counter()
        trained = train_requests(
            spec, requests, device=device, cache=cache, on_runs_done=on_runs_done
        )
        for request, runs in zip(requests, trained, strict=True):
            cells = add_runs(spec, cells, request, runs)
        rounds.append({
            "round": len(rounds),
            "cells": len(requests),
            "runs": sum(r.cell.seeds for r in requests),
            "wall_seconds": time.perf_counter() - round_started,
        })  # fmt: skip
    engine = engine_info(device, spec.dtype, time.perf_counter() - started)
    return assemble_result(spec, cells, engine, rounds)
