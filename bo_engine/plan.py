"""Planning a job: which cells train together, and the result document they make.

Torch-free, so the API can plan and assemble without importing the engine's training code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bo_engine.adaptive import adaptive_summary
from bo_engine.spec import Cell, JobSpec

# A batch bigger than this is split (by whole cells) so that one task stays short and bounded.
MAX_RUNS_PER_BATCH = 128


@dataclass(frozen=True)
class RunSetup:
    """One run to train: a cell of the spec (and its index) with one seed."""

    cell_index: int
    cell: Cell
    seed: int


@dataclass(frozen=True)
class Batch:
    """Cells (indices into `spec.cells`) that train together as one tensor program."""

    index: int
    cell_indices: tuple[int, ...]
    runs: int


def plan_batches(spec: JobSpec, max_runs: int = MAX_RUNS_PER_BATCH) -> list[Batch]:
    """Group cells by shape key, then cut each group into batches of at most `max_runs` runs."""
    return group_batches(enumerate(spec.cells), max_runs)


def group_batches(
    cells: Iterable[tuple[int, Cell]], max_runs: int = MAX_RUNS_PER_BATCH, first: int = 0
) -> list[Batch]:
    """Batches of (cell index, cell) pairs: grouped by shape key, each group cut (by whole
    cells, in the given order) into batches of at most `max_runs` runs; numbered from `first`."""
    groups: dict[tuple[Any, ...], list[tuple[int, Cell]]] = {}
    for index, cell in cells:
        groups.setdefault(cell.shape_key(), []).append((index, cell))
    batches: list[Batch] = []
    for members in groups.values():
        current: list[int] = []
        runs = 0
        for index, cell in members:
            if current and runs + cell.seeds > max_runs:
                batches.append(Batch(first + len(batches), tuple(current), runs))
                current, runs = [], 0
            current.append(index)
            runs += cell.seeds
        batches.append(Batch(first + len(batches), tuple(current), runs))
    return batches


def assemble_result(
    spec: JobSpec,
    cells: list[dict[str, Any]],
    engine: dict[str, Any] | None,
    rounds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The result document: cells in index order, the swept axes, the theory's constants
    (which figures overlay) and engine facts (None for a job that was cancelled or failed
    before it finished). An adaptive spec's adds `rounds` (cells and runs each round asked for)
    and, with a refine section, `refine`, `boundaries` and `scaling`
    (`bo_engine.adaptive.adaptive_summary`): `bolab run --local` and the service both assemble
    through here."""
    result = {
        "cells": sorted(cells, key=lambda c: c["index"]),
        "axes": spec.axes,
        "theory": spec.theory.model_dump(),
        "engine": engine,
    }
    if not spec.is_adaptive:
        return result
    return {**result, "rounds": rounds or [], **adaptive_summary(spec, cells)}
