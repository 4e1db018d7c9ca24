"""Adaptive jobs: the next round's cells and seeds, and the boundaries and scaling they give.

Everything here is a pure function of the spec and the cells stored so far, so any process (the
local runner, any worker) plans the same next round from the same stored cells. A stored cell is
a cell result (`bo_engine.results.summarize_cell`) with one more field, `point`: the grid axis
values of its line, plus the refine axis value that places it on the line. A round is a list of
`Request`s; an empty one means the job is done.

Each round, line by line (a line is one combination of the grid axes' values):
1. a line without cells gets its first cells (FIRST_CELLS, evenly in the refine scale over the
   range, ends included; one cell at the grid point if there is no refine section);
2. else cells short of seeds (`bo_engine.seeding`) get more, the next seed numbers;
3. else, with a refine section, the crossing is estimated (`bo_engine.boundary`) and one cell is
   added where it narrows the crossing down, unless the line has converged, has no crossing,
   has `max_cells_per_line` cells, or no gap wide enough is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bo_engine.boundary import (
    Crossing,
    LineCell,
    converged,
    find_crossing,
    from_scale,
    next_x,
    to_scale,
)
from bo_engine.results import summarize_cell
from bo_engine.scaling import scaling
from bo_engine.seeding import first_seeds, seeds_to_add
from bo_engine.spec import Cell, JobSpec, SeedsPolicy, resolve_cell, snap

# Cells a line starts with, evenly spaced in the refine scale (ends included).
FIRST_CELLS = 5


@dataclass(frozen=True)
class Request:
    """Runs to train: the cell at `point`, seeds cell.seed .. cell.seed + cell.seeds - 1."""

    point: dict[str, Any]
    cell: Cell


@dataclass(frozen=True)
class LineState:
    """What a line's cells say: the crossing, where the next cell goes (None: no more cells),
    whether it converged, and why it stopped or what the data contradict."""

    crossing: Crossing
    next_x: float | None
    converged: bool
    note: str | None


def runs_bound(spec: JobSpec) -> int:
    """The most runs the spec can use: lines x cells per line x seeds per cell, at most."""
    seeds = spec.seeds.max if isinstance(spec.seeds, SeedsPolicy) else spec.seeds
    cells = spec.refine.max_cells_per_line if spec.refine else 1
    return len(spec.lines) * cells * seeds


def line_key(spec: JobSpec, point: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(point[a] for a in spec.axes)


def by_line(spec: JobSpec, cells: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict]]:
    """Stored cells grouped by line, each group sorted along the refine axis."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(line_key(spec, cell["point"]), []).append(cell)
    if spec.refine:
        for group in groups.values():
            group.sort(key=lambda c: c["point"][spec.refine.axis])
    return groups


def plan_round(spec: JobSpec, cells: list[dict[str, Any]]) -> list[Request]:
    """The next round's requests, given the cells stored so far; [] when the job is done."""
    groups = by_line(spec, cells)
    requests: list[Request] = []
    for line in spec.lines:
        requests += _plan_line(spec, line, groups.get(line_key(spec, line), []))
    return requests


def _plan_line(spec: JobSpec, line: dict[str, Any], cells: list[dict[str, Any]]) -> list[Request]:
    if not cells:
        return [_new(spec, point) for point in _first_points(spec, line)]
    more = [_more(spec, c) for c in cells if _seeds_short(spec, c)]
    if more or spec.refine is None:
        return more
    x = line_state(spec, line, cells).next_x
    return [] if x is None else [_new(spec, {**line, spec.refine.axis: x})]


def _first_points(spec: JobSpec, line: dict[str, Any]) -> list[dict[str, Any]]:
    if spec.refine is None:
        return [line]
    refine = spec.refine
    t0, t1 = (to_scale(x, refine.scale) for x in refine.range)
    count = min(FIRST_CELLS, refine.max_cells_per_line)
    xs = [from_scale(t0 + (t1 - t0) * k / (count - 1), refine.scale) for k in range(count)]
    xs[0], xs[-1] = refine.range  # exactly the ends, whatever the rounding of exp(log x)
    snapped = dict.fromkeys(snap(refine.axis, x, line, spec) for x in xs)
    return [{**line, refine.axis: x} for x in snapped]


def _seeds_metric(spec: JobSpec) -> str:
    if isinstance(spec.seeds, SeedsPolicy):
        return spec.seeds.target.metric
    return spec.refine.metric if spec.refine else "test_error"


def _seeds_short(spec: JobSpec, cell: dict[str, Any]) -> int:
    return seeds_to_add(spec.seeds, len(cell["runs"]), cell["summary"][_seeds_metric(spec)])


def _new(spec: JobSpec, point: dict[str, Any]) -> Request:
    cell = resolve_cell(spec, point)
    return Request(point, cell.model_copy(update={"seeds": first_seeds(spec.seeds)}))


def _more(spec: JobSpec, stored: dict[str, Any]) -> Request:
    cell = resolve_cell(spec, stored["point"])
    update = {"seed": cell.seed + len(stored["runs"]), "seeds": _seeds_short(spec, stored)}
    return Request(stored["point"], cell.model_copy(update=update))


def line_state(spec: JobSpec, line: dict[str, Any], cells: list[dict[str, Any]]) -> LineState:
    """The crossing on a line whose cells have their seeds, and what the search does next."""
    refine = spec.refine
    assert refine is not None
    points = [_line_cell(c, refine.axis, refine.metric) for c in cells]
    crossing = find_crossing(points, refine.level, refine.scale)
    notes = [crossing.note]
    if crossing.estimate is None:
        return LineState(crossing, None, False, crossing.note)
    if converged(crossing, refine.rel_tolerance):
        return LineState(crossing, None, True, crossing.note)
    x = next_x(points, crossing, refine.scale, refine.rel_tolerance)
    if x is not None:
        x = snap(refine.axis, x, line, spec)
        x = None if x in {p.x for p in points} else x
    if len(cells) >= refine.max_cells_per_line:
        x = None
        notes.append(f"stopped at max_cells_per_line = {refine.max_cells_per_line} cells")
    elif x is None:
        notes.append(
            "the cells' own intervals limit the crossing's: a tighter seeds target would "
            "narrow it"
        )
    return LineState(crossing, x, False, "; ".join(n for n in notes if n) or None)


def _line_cell(cell: dict[str, Any], axis: str, metric: str) -> LineCell:
    stats = cell["summary"][metric]
    ci = stats["ci95"] or [stats["mean"], stats["mean"]]
    return LineCell(float(cell["point"][axis]), stats["mean"], (ci[0], ci[1]))


def add_runs(
    spec: JobSpec, cells: list[dict[str, Any]], request: Request, runs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The stored cells with a request's runs added: to its cell if stored, else as a new cell
    (index = the number of cells so far). A run of a seed the cell has replaces it, so adding
    the same runs twice (a redelivered round) changes nothing. Each cell's params report the
    seeds it has."""
    stored = next((c for c in cells if c["point"] == request.point), None)
    index = stored["index"] if stored else len(cells)
    updated = merged_cell(spec, stored, request.point, index, runs)
    return [updated if c is stored else c for c in cells] + ([] if stored else [updated])


def merged_cell(
    spec: JobSpec,
    stored: dict[str, Any] | None,
    point: dict[str, Any],
    index: int,
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    """The cell at `point` (number `index`) holding the `stored` cell's runs (None: a new
    cell) and `runs`, one per seed (a run of a seed it has replaces it), summarized again."""
    by_seed = {r["seed"]: r for r in (stored["runs"] if stored else []) + runs}
    everything = [by_seed[seed] for seed in sorted(by_seed)]
    cell = resolve_cell(spec, point).model_copy(update={"seeds": len(everything)})
    return {"point": point, **summarize_cell(index, cell, everything)}


def boundaries(spec: JobSpec, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per line: the crossing's estimate and 95 % interval, the cells and runs the
    line used, whether it converged, and a note (why not, or what contradicts monotonicity)."""
    groups = by_line(spec, cells)
    entries = []
    for line in spec.lines:
        members = groups.get(line_key(spec, line), [])
        state = line_state(spec, line, members) if members else None
        crossing = state.crossing if state else None
        entries.append({
            "line": line,
            "estimate": crossing.estimate if crossing else None,
            "ci95": list(crossing.ci95) if crossing and crossing.ci95 else None,
            "cells": len(members),
            "runs": sum(len(c["runs"]) for c in members),
            "converged": bool(state and state.converged),
            "note": state.note if state else "no cells",
        })  # fmt: skip
    return entries


def adaptive_summary(spec: JobSpec, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The result's adaptive parts, with a refine section: `refine` (the search as specified),
    `boundaries` and `scaling`."""
    if spec.refine is None:
        return {}
    found = boundaries(spec, cells)
    return {
        "refine": spec.refine.model_dump(),
        "boundaries": found,
        "scaling": scaling(spec.lines, found, spec.refine.axis),
    }
