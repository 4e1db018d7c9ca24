"""Adaptive specs: validation (the service's 422 naming the field), the seeds policy, the boundary
search and its interval's coverage on noisy synthetic curves, the power-law fit, and
`bolab run --local` running round by round, deterministically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bo_engine.adaptive import Request, add_runs, boundaries, plan_round, runs_bound
from bo_engine.boundary import LineCell, find_crossing
from bo_engine.plots import plot_result
from bo_engine.scaling import fit_power_law, scaling
from bo_engine.seeding import seeds_to_add
from bo_engine.spec import JobSpec, SeedsPolicy
from bolab.cli import app
from tests.helpers import TINY
from tests.inprocess import AppClient

pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]

TARGET = {"min": 3, "max": 40, "target": {"metric": "test_error", "ci95_halfwidth": 0.02}}
REFINE = {"axis": "gamma", "range": [0.001, 0.5], "scale": "log", "level": 0.1}
ADAPTIVE = {
    **TINY,
    "seeds": TARGET,
    "grid": {"n": [20, 40], "d_over_n": [2]},
    "refine": {**REFINE, "rel_tolerance": 0.3, "max_cells_per_line": 8},
    "max_margin_baseline": False,
}


# --- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"refine": {**REFINE, "axis": "colour"}}, ["refine.axis", "unknown axis 'colour'"]),
        ({"refine": {**REFINE, "axis": "stop"}}, ["refine.axis", "unknown axis 'stop'"]),
        ({"refine": {**REFINE, "range": [0.1, 0.1]}}, ["refine.range", "lo < hi"]),
        ({"refine": {**REFINE, "range": [0.2, 0.1]}}, ["refine.range", "lo < hi"]),
        ({"refine": {**REFINE, "range": [0.0, 0.1]}}, ["refine.range", "log scale needs lo > 0"]),
        ({"refine": {**REFINE, "rel_tolerance": 0}}, ["refine.rel_tolerance", "greater than 0"]),
        ({"refine": {**REFINE, "rel_tolerance": -1}}, ["refine.rel_tolerance"]),
        ({"refine": {**REFINE, "metric": "colour"}}, ["refine.metric", "unknown metric"]),
        ({"refine": {**REFINE, "range": [0.01, 1.5]}}, ["gamma", "less than 1"]),
        ({"grid": {"gamma": [0.1]}, "refine": REFINE}, ["refine.axis", "also a grid axis"]),
        ({"grid": {"gamma_times_n": [1]}, "refine": REFINE}, ["refine.axis", "grid axis"]),
        ({"seeds": {**TARGET, "min": 50}}, ["seeds.min (50) must be <= seeds.max (40)"]),
        ({"seeds": {**TARGET, "target": {"ci95_halfwidth": 0}}}, ["ci95_halfwidth"]),
        ({"seeds": 1, "refine": REFINE}, ["seeds: a boundary search needs 2 or more seeds"]),
        ({"seeds": TARGET, "grid": {"seeds": [2, 3]}}, ["grid.seeds"]),
    ],
)
def test_bad_adaptive_specs_name_the_field(change: dict, named: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({**TINY, **change})
    text = "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in caught.value.errors()
    )
    for words in named:
        assert words in text


def test_integer_seeds_and_specs_without_refine_are_unchanged() -> None:
    spec = JobSpec.model_validate({**TINY, "grid": {"n": [20, 30]}})
    assert spec.seeds == 2 and spec.refine is None and not spec.is_adaptive
    assert spec.runs_total == 4
    adaptive = JobSpec.model_validate(ADAPTIVE)
    assert isinstance(adaptive.seeds, SeedsPolicy) and adaptive.is_adaptive
    assert runs_bound(adaptive) == 2 * 8 * 40
    # Its own JSON validates back to the same spec.
    assert JobSpec.model_validate_json(adaptive.model_dump_json()) == adaptive


def test_the_service_takes_adaptive_specs(app: AppClient) -> None:
    for body in (ADAPTIVE, {**TINY, "seeds": TARGET}):
        response = app.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        app.post(f"/v1/jobs/{response.json()['id']}/cancel")


@pytest.mark.parametrize(
    ("refine", "field"),
    [
        ({**REFINE, "axis": "colour"}, "axis"),
        ({**REFINE, "range": [0.1, 0.1]}, "range"),
        ({**REFINE, "rel_tolerance": 0}, "rel_tolerance"),
        ({**REFINE, "metric": "colour"}, "metric"),
    ],
)
def test_bad_refine_spec_is_422_naming_the_field(app: AppClient, refine: dict, field: str) -> None:
    response = app.post("/v1/jobs", json={**TINY, "refine": refine})
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["detail"]]
    assert any("refine" in loc and field in loc for loc in locs), locs


# --- seeds to a target ----------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, Any]:
    from bo_engine.results import describe

    return describe(values)


def test_seeds_policy_tops_up_then_grows_until_the_target() -> None:
    policy = SeedsPolicy.model_validate(TARGET)
    assert seeds_to_add(policy, 0, _summary([])) == 3
    noisy = [0.0, 0.3, 0.1]
    grow = seeds_to_add(policy, 3, _summary(noisy))
    assert 1 <= grow <= 3  # at most a doubling per round
    assert seeds_to_add(policy, 3, _summary([0.1, 0.1, 0.1])) == 0  # interval 0 wide
    assert seeds_to_add(policy, 40, _summary(noisy * 13 + [0.0])) == 0  # at max
    assert seeds_to_add(policy, 38, _summary(noisy * 12 + [0.0, 0.1])) == 2  # never over max
    assert seeds_to_add(5, 2, _summary([0.1, 0.2])) == 3  # a fixed count tops up


def test_seeds_policy_reaches_the_target_on_a_noisy_cell() -> None:
    """Feed the policy draws of sd 0.1 round by round: it stops once the t interval's
    half-width is within the target, with about the seeds the target needs."""
    policy = SeedsPolicy.model_validate(TARGET | {"max": 500})
    draws = np.random.default_rng(3).normal(0.2, 0.1, 500)
    have = 0
    while add := seeds_to_add(policy, have, _summary(list(draws[:have]))):
        have += add
    ci = _summary(list(draws[:have]))["ci95"]
    assert (ci[1] - ci[0]) / 2 <= 0.02
    assert 80 <= have <= 200  # (1.96 * 0.1 / 0.02)^2 = 96, overshoot bounded by doubling


# --- the boundary: synthetic lines, no training ----------------------------------------------


def _curve(x: np.ndarray, crossing: float) -> np.ndarray:
    """A falling sigmoid in log x through 0.1 at `crossing`: 0.5 far left, 0 far right."""
    z = np.log(x / crossing) * 4.0 + math.log(4.0)  # 0.5 / (1 + e^z) = 0.1 at x = crossing
    return 0.5 / (1 + np.exp(z))


def _synthetic_runs(point: dict, seeds: range, rng_seed: int, crossing: float) -> list[dict]:
    """Runs of a noisy synthetic metric: per seed, the curve plus normal noise of sd 0.08."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng([rng_seed, seed, int(point["gamma"] * 1e12)])
        value = float(_curve(np.array(point["gamma"]), crossing) + rng.normal(0, 0.08))
        out.append({"seed": seed, "test_error": value, "interpolated": True})
    return out


def _search(spec: JobSpec, rng_seed: int, crossing: float) -> tuple[list[dict], int]:
    """Run the planner against the synthetic metric; the cells and the number of rounds."""
    cells: list[dict] = []
    rounds = 0
    while requests := plan_round(spec, cells):
        rounds += 1
        for r in requests:
            seeds = range(r.cell.seed, r.cell.seed + r.cell.seeds)
            cells = add_runs(spec, cells, r, _synthetic_runs(r.point, seeds, rng_seed, crossing))
    return cells, rounds


SEARCH = {
    "n": 50,
    "d": 100,
    "seeds": {"min": 5, "max": 200, "target": {"metric": "test_error", "ci95_halfwidth": 0.015}},
    "refine": {**REFINE, "range": [0.001, 0.9], "rel_tolerance": 0.15},
}


def test_boundary_search_converges_and_its_interval_covers_the_crossing() -> None:
    """Over 60 noisy lines the 95 % interval covers the true crossing in >= 90 % of them
    (a check of the interpolated-band interval), every line converges within its budget,
    and each line uses fewer runs than a 24-cell grid at the seeds that line needed."""
    spec = JobSpec.model_validate(SEARCH)
    covered = 0
    for rng_seed in range(60):
        truth = float(np.exp(np.random.default_rng(rng_seed).uniform(np.log(0.005), np.log(0.2))))
        cells, _ = _search(spec, rng_seed, truth)
        (found,) = boundaries(spec, cells)
        assert found["converged"], found
        lo, hi = found["ci95"]
        assert hi - lo < 0.15 * found["estimate"]
        covered += lo <= truth <= hi
        assert found["cells"] <= 24 and found["runs"] < 24 * max(len(c["runs"]) for c in cells)
    assert covered >= 54


def test_boundary_search_is_a_pure_function_of_the_stored_cells() -> None:
    """Planning from the same stored cells gives the same round, in any order of the cells
    (any worker plans the same next round); the whole search is deterministic."""
    spec = JobSpec.model_validate(SEARCH)
    cells, rounds = _search(spec, 7, 0.03)
    again, rounds_again = _search(spec, 7, 0.03)
    assert (cells, rounds) == (again, rounds_again) and rounds > 3
    partial = cells[:6]
    assert plan_round(spec, partial) == plan_round(spec, list(reversed(partial)))


def test_level_never_crossed_is_said_in_the_note() -> None:
    spec = JobSpec.model_validate({**SEARCH, "refine": {**SEARCH["refine"], "level": 0.9}})
    cells, _ = _search(spec, 1, 0.03)
    (found,) = boundaries(spec, cells)
    assert found["estimate"] is None and not found["converged"]
    assert "level 0.9 never crossed" in found["note"]
    assert found["cells"] == 5  # the first cells, nothing more


def test_a_non_monotone_line_is_noted() -> None:
    cells = [
        LineCell(0.01, 0.4, (0.38, 0.42)),
        LineCell(0.02, 0.05, (0.04, 0.06)),
        LineCell(0.04, 0.3, (0.28, 0.32)),
        LineCell(0.08, 0.02, (0.01, 0.03)),
    ]
    crossing = find_crossing(cells, 0.1, "log")
    assert crossing.note and "not monotone" in crossing.note
    assert crossing.estimate is not None


def test_crossing_interval_from_the_bracketing_cells() -> None:
    """Linear in log x between two cells: the estimate is where the means' line meets the
    level, the interval where the bounds' lines do."""
    cells = [LineCell(0.01, 0.3, (0.25, 0.35)), LineCell(0.1, -0.1, (-0.15, -0.05))]
    crossing = find_crossing(cells, 0.1, "log")
    assert crossing.estimate == pytest.approx(10**-1.5)
    lo, hi = crossing.ci95
    assert math.log10(lo) == pytest.approx(-2 + 0.15 / 0.4, abs=1e-9)  # lower bounds meet 0.1
    assert math.log10(hi) == pytest.approx(-2 + 0.25 / 0.4, abs=1e-9)  # upper bounds meet 0.1


# --- scaling -------------------------------------------------------------------------------


def test_power_law_fit_recovers_the_exponent_and_says_if_theory_agrees() -> None:
    ns = [50, 100, 200, 400]
    estimates = [1.3 / n for n in ns]
    intervals = [(e * 0.95, e * 1.05) for e in estimates]
    fit = fit_power_law(ns, estimates, intervals)
    assert fit["exponent"] == pytest.approx(-1.0) and fit["constant"] == pytest.approx(1.3)
    lines = [{"n": n, "d_over_n": 2} for n in ns]
    found = [
        {"line": ln, "estimate": e, "ci95": list(ci)}
        for ln, e, ci in zip(lines, estimates, intervals, strict=True)
    ]
    result = scaling(lines, found, "gamma")
    assert result["axis"] == "n" and result["theory_exponent"] == -1.0 and result["agrees"]
    steeper = [
        {**b, "estimate": 1.3 / n**2, "ci95": [0.95 * 1.3 / n**2, 1.05 * 1.3 / n**2]}
        for b, n in zip(found, ns, strict=True)
    ]
    assert scaling(lines, steeper, "gamma")["agrees"] is False
    assert scaling([{"n": 50, "d": 100}, {"n": 100, "d": 200}], found[:2], "gamma") is None


# --- bolab run --local ----------------------------------------------------------------------


def _run_local(spec: dict, where: Path) -> dict:
    path = where / "spec.json"
    path.write_text(json.dumps(spec))
    out = where / "result.json"
    result = CliRunner().invoke(app, ["run", "--local", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def local_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    where = tmp_path_factory.mktemp("adaptive")
    return where, _run_local(ADAPTIVE, where)


def test_run_local_searches_round_by_round_and_is_deterministic(
    local_result: tuple[Path, dict], tmp_path: Path
) -> None:
    _, first = local_result
    assert [b["line"] for b in first["boundaries"]] == [
        {"n": 20, "d_over_n": 2},
        {"n": 40, "d_over_n": 2},
    ]
    assert sum(r["runs"] for r in first["rounds"]) == sum(len(c["runs"]) for c in first["cells"])
    assert len(first["rounds"]) > 2 and "scaling" in first and first["refine"]["axis"] == "gamma"
    for found in first["boundaries"]:
        assert {"estimate", "ci95", "cells", "runs", "converged", "note"} <= set(found)
        assert 5 <= found["cells"] <= 8
    for cell in first["cells"]:
        assert [r["seed"] for r in cell["runs"]] == list(range(len(cell["runs"])))  # next seeds
        assert cell["params"]["seeds"] == len(cell["runs"]) >= 3
    again = _run_local(ADAPTIVE, tmp_path)
    strip = [{k: v for k, v in c.items() if k != "runs"} for c in first["cells"]]
    assert strip == [{k: v for k, v in c.items() if k != "runs"} for c in again["cells"]]
    assert first["boundaries"] == again["boundaries"]


def test_plot_kind_boundary(local_result: tuple[Path, dict]) -> None:
    where, result = local_result
    png = where / "boundary.png"
    args = ["plot", str(where / "result.json"), "--kind", "boundary", "--out", str(png)]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = plot_result(result, "boundary")
    ax = figure.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_xlabel() == "n"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("fit: exponent") for label in labels)
    assert "theory slope -1" in labels


def test_run_local_table_shows_the_refine_axis(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**ADAPTIVE, "grid": {"n": [20], "d_over_n": [2]}}))
    outcome = CliRunner().invoke(app, ["run", "--local", str(spec), "--format", "table"])
    assert outcome.exit_code == 0, outcome.stderr
    header = next(line for line in outcome.stdout.splitlines() if "d_over_n" in line)
    assert "gamma" in header


def test_plot_kind_boundary_needs_boundaries(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"cells": [], "axes": []}))
    outcome = CliRunner().invoke(app, ["plot", str(plain), "--kind", "boundary"])
    assert outcome.exit_code == 1 and "no boundaries" in outcome.stderr


def test_round_requests_train_the_next_seed_numbers(tmp_path: Path) -> None:
    """A cell short of seeds asks for the next seed numbers, not new ones."""
    spec = JobSpec.model_validate({**TINY, "seeds": TARGET | {"min": 2}})
    (first,) = plan_round(spec, [])
    assert (first.cell.seed, first.cell.seeds) == (0, 2)
    runs = [{"seed": s, "test_error": 0.1 * s, "interpolated": True} for s in (0, 1)]
    cells = add_runs(spec, [], first, runs)
    assert add_runs(spec, cells, first, runs) == cells  # the same runs again change nothing
    (more,) = plan_round(spec, cells)
    assert isinstance(more, Request) and more.cell.seed == 2 and more.point == first.point


def test_refine_points_snap_to_values_a_cell_can_take() -> None:
    """Integer axes get whole numbers (width an even one); d_over_n a multiple of 1/n."""
    for axis, bounds, check in [
        ("n", [20, 400], lambda v: isinstance(v, int)),
        ("width", [4, 100], lambda v: isinstance(v, int) and v % 2 == 0),
        ("d_over_n", [0.5, 7.3], lambda v: abs(v * 30 - round(v * 30)) < 1e-9),
    ]:
        spec = JobSpec.model_validate(
            {"n": 30, "d": 60, "seeds": 2, "refine": {**REFINE, "axis": axis, "range": bounds}}
        )
        points = [r.point[axis] for r in plan_round(spec, [])]
        assert len(points) == 5 and all(check(v) for v in points), points
        assert all(r.cell.seeds == 2 and r.cell.seed == 0 for r in plan_round(spec, []))


def test_the_boundary_example_validates() -> None:
    spec = JobSpec.model_validate_json(Path("examples/boundary_gamma_n.json").read_text())
    assert spec.is_adaptive and spec.refine and spec.refine.axis == "gamma"
    assert [line["n"] for line in spec.lines] == [50, 100, 200, 400]
    assert runs_bound(spec) == 4 * 24 * 200


def test_run_local_with_a_cache_serves_every_run_of_a_rerun(tmp_path: Path) -> None:
    """New seeds are the next seed numbers, so a rerun of the same search finds every run in
    the cache, plans the same rounds from them and gives the same boundaries."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**ADAPTIVE, "grid": {"n": [20], "d_over_n": [2]}}))
    results = []
    for name in ("first", "again"):
        out = tmp_path / f"{name}.json"
        args = ["run", "--local", str(spec), "--cache", str(tmp_path / "cache"), "--out", str(out)]
        outcome = CliRunner().invoke(app, args)
        assert outcome.exit_code == 0, outcome.stderr
        results.append((json.loads(out.read_text()), outcome.stderr))
    (first, _), (again, said) = results
    runs = sum(len(c["runs"]) for c in again["cells"])
    assert all(r["cached"] for c in again["cells"] for r in c["runs"])
    assert f"{runs} from the cache" in said
    assert again["boundaries"] == first["boundaries"] and again["rounds"] != []
