"""An adaptive job's rounds as the service runs them: a round's requests with the cell index
each one fills, its batches, and the spec as those batches see it. Pure and torch-free.

Any worker plans a round from the cells stored so far (`bo_engine.adaptive.plan_round`). Cell
indices are assigned the way `bo_engine.adaptive.add_runs` assigns them locally: a request for
a point already stored extends that cell, a new point takes the next index, in request order;
so the service's cells are the local run's, index for index. Batches are numbered on from the
previous rounds' (`first_batch`), so "batch i" names one unit of the job across all rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bo_engine.adaptive import plan_round
from bo_engine.cost import run_cost
from bo_engine.plan import MAX_RUNS_PER_BATCH, Batch, group_batches
from bo_engine.spec import Cell, JobSpec, resolve_cell


class SpecView:
    """A spec with other cells: `cells` (a list, or cell index -> cell) replaces the spec's,
    every other attribute is the spec's. What a round's batches train (`points`: cell index
    -> its point), and what admission prices an adaptive job by."""

    def __init__(
        self,
        spec: JobSpec,
        cells: Sequence[Cell] | Mapping[int, Cell],
        points: Mapping[int, dict[str, Any]] | None = None,
    ) -> None:
        self.spec, self.cells, self.points = spec, cells, points or {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spec, name)

    @property
    def runs_total(self) -> int:
        cells = self.cells.values() if isinstance(self.cells, Mapping) else self.cells
        return sum(cell.seeds for cell in cells)


@dataclass(frozen=True)
class RoundRequest:
    """Runs a round trains: cell `index` at `point`, seeds `seed` .. `seed + seeds - 1`."""

    index: int
    point: dict[str, Any]
    seed: int
    seeds: int

    def cell(self, spec: JobSpec) -> Cell:
        return resolve_cell(spec, self.point).model_copy(
            update={"seed": self.seed, "seeds": self.seeds}
        )


@dataclass(frozen=True)
class RoundPlan:
    """Round `round`: its requests and its batches (numbered from `first_batch`). No requests:
    the planner is done and the job closes."""

    round: int
    requests: tuple[RoundRequest, ...]
    batches: tuple[Batch, ...]

    @property
    def first_batch(self) -> int:
        return self.batches[0].index if self.batches else 0

    @property
    def runs(self) -> int:
        return sum(r.seeds for r in self.requests)

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "requests": [vars(r) for r in self.requests],
            "batches": [list(b.cell_indices) for b in self.batches],
            "first_batch": self.first_batch,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundPlan:
        requests = tuple(RoundRequest(**r) for r in data["requests"])
        seeds = {r.index: r.seeds for r in requests}
        first = data["first_batch"]
        batches = tuple(
            Batch(first + k, tuple(cells), sum(seeds[i] for i in cells))
            for k, cells in enumerate(data["batches"])
        )
        return cls(data["round"], requests, batches)


def plan_next_round(
    spec: JobSpec, cells: list[dict[str, Any]], round: int, first_batch: int
) -> RoundPlan:
    """Round `round` from the stored `cells`: the planner's requests, each with its cell
    index, cut into batches numbered from `first_batch`."""
    index_of = {_point_key(c["point"]): c["index"] for c in cells}
    following = max(index_of.values(), default=-1) + 1
    requests = []
    for request in plan_round(spec, cells):
        key = _point_key(request.point)
        if key not in index_of:
            index_of[key], following = following, following + 1
        cell = request.cell
        requests.append(RoundRequest(index_of[key], request.point, cell.seed, cell.seeds))
    view = round_spec(spec, requests)
    batches = group_batches(view.cells.items(), MAX_RUNS_PER_BATCH, first_batch)
    return RoundPlan(round, tuple(requests), tuple(batches))


def _point_key(point: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(point.items()))


def round_spec(spec: JobSpec, requests: Sequence[RoundRequest]) -> SpecView:
    """The spec as a round's batches see it: cell index -> the cell with the seeds it trains."""
    cells = {r.index: r.cell(spec) for r in requests}
    return SpecView(spec, cells, {r.index: r.point for r in requests})


def round_entry(plan: RoundPlan, wall_seconds: float) -> dict[str, Any]:
    """The round as the result's `rounds` lists it (the same fields `bolab run --local` has)."""
    return {
        "round": plan.round,
        "cells": len(plan.requests),
        "runs": plan.runs,
        "wall_seconds": wall_seconds,
    }


def budget_spec(spec: JobSpec) -> SpecView:
    """The most an adaptive job can train, as cells to price: on every line
    `max_cells_per_line` cells (1 without a refine section) like the costlier end of its range,
    each with the most seeds (`bo_engine.adaptive.runs_bound` runs in all). `spec.cells` are
    only the ends of each line's range, at the most seeds."""
    per_line = spec.refine.max_cells_per_line if spec.refine else 1
    ends = 2 if spec.refine else 1
    cells = []
    for k in range(0, len(spec.cells), ends):
        line = spec.cells[k : k + ends]
        cells += [max(line, key=lambda c: _run_work(spec, c))] * per_line
    return SpecView(spec, cells)


def _run_work(spec: JobSpec, cell: Cell) -> float:
    cost = run_cost(
        cell,
        dtype=spec.dtype,
        device=spec.device,
        record_every=spec.record_every,
        baseline=spec.max_margin_baseline,
    )
    return cost.work
