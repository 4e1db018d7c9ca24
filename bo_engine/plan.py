"""Planning a job: which cells train together, and the result document they make.

Torch-free, so the API can plan and assemble without importing the engine's training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, cell in enumerate(spec.cells):
        groups.setdefault(cell.shape_key(), []).append(index)
    batches: list[Batch] = []
    for indices in groups.values():
        current: list[int] = []
        runs = 0
        for index in indices:
            seeds = spec.cells[index].seeds
            if current and runs + seeds > max_runs:
                batches.append(Batch(len(batches), tuple(current), runs))
                current, runs = [], 0
            current.append(index)
            runs += seeds
        batches.append(Batch(len(batches), tuple(current), runs))
    return batches


def assemble_result(
    spec: JobSpec, cells: list[dict[str, Any]], engine: dict[str, Any] | None
) -> dict[str, Any]:
    """The result document: cells in grid order, the swept axes, the theory's constants (which
    figures overlay) and engine facts (None for a job that was cancelled or failed before it
    finished)."""
    return {
        "cells": sorted(cells, key=lambda c: c["index"]),
        "axes": spec.axes,
        "theory": spec.theory.model_dump(),
        "engine": engine,
    }
