"""Adaptive jobs against uniform grids, with `bolab run --local` (same spec, same numbers).

boundary: gamma* where the mean test error crosses 0.1, for n in {50, 100, 200, 400} at d = 2n,
    gamma in [0.001, 0.2] (log scale), seeds to a target; against a dense uniform grid (16
    log-spaced gammas x 50 seeds by default) whose crossings come from the same estimator.
    Prints each line's estimate and interval from both, whether the intervals overlap, the run
    counts, the wall times and the fitted exponent next to the theory's -1.
seeds: examples/paper_gamma.json's grid with seeds to a target half-width; against uniform
    seeds: one uniform run with 1.5 x the most seeds any adaptive cell took, from which the
    fewest uniform seeds per cell that reach the target everywhere are read off (seeds
    0..S-1 of a cell are the same runs whatever S, so its first S runs are that uniform run).
coverage: the boundary search's 95 % interval on synthetic lines with a known crossing (a
    falling sigmoid in log gamma through 0.1, normal noise per seed; no training): how often the
    interval covers the truth, how often the line converges, cells and runs per line.

    python bench/adaptive.py boundary [--out DIR] [--dense-points 16] [--dense-seeds 50]
    python bench/adaptive.py seeds [--out DIR] [--halfwidth 0.02]
    python bench/adaptive.py coverage [--lines 200]

Results are kept in --out (default /tmp/bolab-bench-adaptive) and reused when present (--fresh
reruns them). Wall times on a shared 2-core machine are noisy: take them as rough.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bo_engine.boundary import LineCell, find_crossing
from bo_engine.results import mean_ci95
from bo_engine.scaling import scaling

NS = [50, 100, 200, 400]
RANGE = [0.001, 0.2]
LEVEL = 0.1
BOLAB = str(Path(sys.executable).with_name("bolab"))


def run_local(spec: dict[str, Any], name: str, out: Path, fresh: bool) -> tuple[dict, float]:
    """`bolab run --local` on the spec; the result and its wall seconds (kept in out/)."""
    result_file, wall_file = out / f"{name}.result.json", out / f"{name}.wall"
    if fresh or not result_file.exists():
        (out / f"{name}.spec.json").write_text(json.dumps(spec, indent=1))
        started = time.perf_counter()
        subprocess.run(
            [BOLAB, "run", "--local", str(out / f"{name}.spec.json"), "--out", str(result_file)],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
        )
        wall_file.write_text(str(time.perf_counter() - started))
    return json.loads(result_file.read_text()), float(wall_file.read_text())


def runs_of(result: dict[str, Any]) -> int:
    return sum(len(c["runs"]) for c in result["cells"])


def boundary(args: argparse.Namespace) -> None:
    target = {"metric": "test_error", "ci95_halfwidth": args.halfwidth}
    adaptive_spec = {
        "grid": {"n": NS, "d_over_n": [2]},
        "seeds": {"min": 5, "max": 200, "target": target},
        "refine": {"axis": "gamma", "range": RANGE, "scale": "log", "metric": "test_error",
                   "level": LEVEL, "rel_tolerance": args.rel_tolerance,
                   "max_cells_per_line": 24},
        "max_margin_baseline": False,
    }  # fmt: skip
    gammas = [float(g) for g in np.geomspace(*RANGE, args.dense_points)]
    dense_spec = {
        "grid": {"n": NS, "d_over_n": [2], "gamma": gammas},
        "seeds": args.dense_seeds,
        "max_margin_baseline": False,
    }
    adaptive, adaptive_wall = run_local(adaptive_spec, "boundary-adaptive", args.out, args.fresh)
    dense, dense_wall = run_local(dense_spec, "boundary-dense", args.out, args.fresh)
    dense_found = _dense_boundaries(dense)
    print(f"{'n':>4} {'adaptive gamma* [95 %]':>34} {'cells':>5} {'runs':>5}  "
          f"{'dense gamma* [95 %]':>34}  overlap  conv")  # fmt: skip
    for found, ref in zip(adaptive["boundaries"], dense_found, strict=True):
        overlap = _overlap(found["ci95"], ref["ci95"])
        print(f"{found['line']['n']:>4} {_show(found):>34} {found['cells']:>5} {found['runs']:>5}"
              f"  {_show(ref):>34}  {overlap!s:>7}  {found['converged']}")  # fmt: skip
    a_runs, d_runs = runs_of(adaptive), runs_of(dense)
    print(f"runs: adaptive {a_runs} in {len(adaptive['rounds'])} rounds, dense {d_runs} "
          f"({args.dense_points} gammas x {args.dense_seeds} seeds x {len(NS)} n); "
          f"ratio {a_runs / d_runs:.3f} (<= 1/3: {a_runs * 3 <= d_runs})")  # fmt: skip
    print(f"wall: adaptive {adaptive_wall:.0f} s, dense {dense_wall:.0f} s (bolab run --local, "
          "process start included)")
    for name, fit in (("adaptive", adaptive["scaling"]),
                      ("dense", scaling(_lines(), dense_found, "gamma"))):  # fmt: skip
        print(f"fit ({name}): gamma* = {fit['constant']:.3g} n^{fit['exponent']:.3f}, exponent "
              f"95 % [{fit['exponent_ci95'][0]:.3f}, {fit['exponent_ci95'][1]:.3f}]; theory "
              f"{fit['theory_exponent']:+g}, agrees: {fit['agrees']}")  # fmt: skip


def _lines() -> list[dict[str, Any]]:
    return [{"n": n, "d_over_n": 2} for n in NS]


def _dense_boundaries(dense: dict[str, Any]) -> list[dict[str, Any]]:
    """The same estimator on the dense grid's cells, line by line."""
    found = []
    for line in _lines():
        cells = sorted(
            (c for c in dense["cells"] if c["params"]["n"] == line["n"]),
            key=lambda c: c["params"]["gamma"],
        )
        points = [_line_cell(c) for c in cells]
        crossing = find_crossing(points, LEVEL, "log")
        ci = list(crossing.ci95) if crossing.ci95 else None
        found.append({"line": line, "estimate": crossing.estimate, "ci95": ci})
    return found


def _line_cell(cell: dict[str, Any]) -> LineCell:
    errors = np.array([r["test_error"] for r in cell["runs"]])
    lo, hi = mean_ci95(errors)
    return LineCell(cell["params"]["gamma"], float(errors.mean()), (lo, hi))


def _overlap(a: list[float] | None, b: list[float] | None) -> bool:
    return bool(a and b and a[0] <= b[1] and b[0] <= a[1])


def _show(found: dict[str, Any]) -> str:
    if found["estimate"] is None:
        return "none"
    lo, hi = found["ci95"]
    return f"{found['estimate']:.5f} [{lo:.5f}, {hi:.5f}]"


def seeds(args: argparse.Namespace) -> None:
    base = json.loads(Path("examples/paper_gamma.json").read_text())
    target = {"metric": "test_error", "ci95_halfwidth": args.halfwidth}
    spec = {**base, "seeds": {"min": 5, "max": 400, "target": target},
            "max_margin_baseline": False}  # fmt: skip
    adaptive, adaptive_wall = run_local(spec, "seeds-adaptive", args.out, args.fresh)
    widths = [_halfwidth([r["test_error"] for r in c["runs"]]) for c in adaptive["cells"]]
    most = max(len(c["runs"]) for c in adaptive["cells"])
    uniform_seeds = math.ceil(1.5 * most)
    uniform_spec = {**base, "seeds": uniform_seeds, "max_margin_baseline": False}
    uniform, uniform_wall = run_local(uniform_spec, "seeds-uniform", args.out, args.fresh)
    fewest = _fewest_uniform(uniform, args.halfwidth)
    cells = len(adaptive["cells"])
    print(f"target half-width {args.halfwidth} on {cells} cells (examples/paper_gamma.json)")
    print(f"adaptive: {runs_of(adaptive)} runs in {len(adaptive['rounds'])} rounds, seeds per "
          f"cell {min(len(c['runs']) for c in adaptive['cells'])}..{most}, widest half-width "
          f"{max(widths):.4f}, all within target: {max(widths) <= args.halfwidth}, "
          f"wall {adaptive_wall:.0f} s")  # fmt: skip
    if fewest is None:
        print(f"uniform: {uniform_seeds} seeds per cell do not reach the target everywhere")
        return
    share = fewest / uniform_seeds
    print(f"uniform: the fewest seeds per cell reaching it everywhere: {fewest} -> "
          f"{fewest * cells} runs; wall about {uniform_wall * share:.0f} s ({uniform_seeds} "
          f"seeds took {uniform_wall:.0f} s, scaled by {share:.2f})")  # fmt: skip
    print(f"ratio adaptive / uniform runs: {runs_of(adaptive) / (fewest * cells):.3f}")


def _halfwidth(values: list[float]) -> float:
    lo, hi = mean_ci95(np.array(values, dtype=float))
    return (hi - lo) / 2


def _fewest_uniform(uniform: dict[str, Any], target: float) -> int | None:
    """The fewest seeds S such that every cell's first S runs reach the target half-width."""
    errors = [[r["test_error"] for r in sorted(c["runs"], key=lambda r: r["seed"])]
              for c in uniform["cells"]]  # fmt: skip
    for count in range(2, len(errors[0]) + 1):
        if all(_halfwidth(e[:count]) <= target for e in errors):
            return count
    return None


def coverage(args: argparse.Namespace) -> None:
    from bo_engine.adaptive import add_runs, boundaries, plan_round
    from bo_engine.spec import JobSpec

    print(f"{'steepness':>9} {'noise sd':>8} {'covered':>8} {'converged':>9} {'cells':>6} "
          f"{'runs':>6}   ({args.lines} lines each, target half-width {args.halfwidth})")
    for steepness in (2.5, 4.0, 8.0):
        for noise in (0.05, 0.1):
            spec = JobSpec.model_validate({
                "n": 50, "d": 100,
                "seeds": {"min": 5, "max": 400, "target": {"metric": "test_error",
                          "ci95_halfwidth": args.halfwidth}},
                "refine": {"axis": "gamma", "range": [0.001, 0.9], "level": LEVEL,
                           "rel_tolerance": args.rel_tolerance},
            })  # fmt: skip
            tally = np.zeros(4)
            for line in range(args.lines):
                rng = np.random.default_rng(line)
                truth = float(np.exp(rng.uniform(np.log(0.005), np.log(0.2))))
                cells: list[dict[str, Any]] = []
                while requests := plan_round(spec, cells):
                    for r in requests:
                        seeds = range(r.cell.seed, r.cell.seed + r.cell.seeds)
                        runs = [_synthetic_run(r.point["gamma"], s, truth, steepness, noise, line)
                                for s in seeds]  # fmt: skip
                        cells = add_runs(spec, cells, r, runs)
                (found,) = boundaries(spec, cells)
                inside = bool(found["ci95"]) and found["ci95"][0] <= truth <= found["ci95"][1]
                tally += [inside, found["converged"], found["cells"], found["runs"]]
            share = tally / args.lines
            print(f"{steepness:>9} {noise:>8} {share[0]:>8.1%} {share[1]:>9.1%} "
                  f"{share[2]:>6.1f} {share[3]:>6.0f}")


def _synthetic_run(
    gamma: float, seed: int, truth: float, steepness: float, noise: float, line: int
) -> dict[str, Any]:
    """0.5 / (1 + 4 (gamma / truth)^steepness): 0.1 at gamma = truth; plus noise of sd `noise`."""
    mean = 0.5 / (1 + 4 * (gamma / truth) ** steepness)
    draw = np.random.default_rng([line, seed, int(gamma * 1e12)]).normal(0, noise)
    return {"seed": seed, "test_error": mean + float(draw), "interpolated": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["boundary", "seeds", "coverage"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bolab-bench-adaptive"))
    parser.add_argument("--fresh", action="store_true", help="rerun even if results are kept")
    parser.add_argument("--dense-points", type=int, default=16)
    parser.add_argument("--dense-seeds", type=int, default=50)
    parser.add_argument("--halfwidth", type=float, default=None)
    parser.add_argument("--rel-tolerance", type=float, default=0.1)
    parser.add_argument("--lines", type=int, default=200, help="synthetic lines (coverage)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.halfwidth is None:
        args.halfwidth = {"boundary": 0.015, "seeds": 0.02, "coverage": 0.015}[args.part]
    {"boundary": boundary, "seeds": seeds, "coverage": coverage}[args.part](args)


if __name__ == "__main__":
    main()
