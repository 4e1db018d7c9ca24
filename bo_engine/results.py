"""Result documents: per-cell summaries with 95 % intervals, flat table rows (per cell and per
run) and CSV.

numpy and scipy only, no torch.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
from scipy import stats

from bo_engine.spec import Cell

# Numeric run metrics summarised per cell, in table order; max-margin fields are flattened.
RUN_METRICS = (
    "test_error",
    "train_error",
    "train_loss",
    "margin",
    "normalized_margin",
    "weight_norm",
    "corrupt_fit_fraction",
    "param_snr",
    "steps",
    "max_margin_norm",
    "max_margin_test_error",
    "margin_ratio",
)


def _metric(run: dict[str, Any], name: str) -> float | None:
    if name.startswith("max_margin_") or name == "margin_ratio":
        baseline = run.get("max_margin") or {}
        return baseline.get(name.removeprefix("max_margin_"))
    return run.get(name)


def mean_ci95(values: np.ndarray) -> list[float] | None:
    """Student t 95 % interval of the mean of `values`; None below two values. Equal values give
    the zero-width interval at their mean."""
    if values.size < 2:
        return None
    mean, sem = float(values.mean()), float(stats.sem(values))
    half = float(stats.t.ppf(0.975, values.size - 1)) * sem
    return [mean - half, mean + half]


def wilson_ci95(successes: int, count: int) -> list[float] | None:
    """Wilson score 95 % interval of a fraction `successes / count`; None for no trials."""
    if count == 0:
        return None
    interval = stats.binomtest(successes, count).proportion_ci(0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def describe(values: list[float | None]) -> dict[str, Any]:
    """mean, sample std (0 for one value), min, max, the t 95 % interval of the mean and the
    count of the values that exist; None (count 0) if none do."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "ci95": None, "count": 0}
    std = float(present.std(ddof=1)) if present.size > 1 else 0.0
    return {
        "mean": float(present.mean()),
        "std": std,
        "min": float(present.min()),
        "max": float(present.max()),
        "ci95": mean_ci95(present),
        "count": int(present.size),
    }


def summarize_cell(index: int, cell: Cell, runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {m: describe([_metric(r, m) for r in runs]) for m in RUN_METRICS}
    interpolated = sum(bool(r["interpolated"]) for r in runs)
    summary["interpolated_fraction"] = interpolated / len(runs)
    summary["interpolated"] = {
        "fraction": interpolated / len(runs),
        "ci95": wilson_ci95(interpolated, len(runs)),
        "count": len(runs),
    }
    return {"index": index, "params": cell.params(), "runs": runs, "summary": summary}


def _ci95_columns(summary: dict[str, Any]) -> dict[str, float | None]:
    """<metric>_ci95_lo and _hi for every run metric, then for the interpolated fraction (empty
    for a summary stored before intervals existed)."""
    columns: dict[str, float | None] = {}
    intervals = [(m, summary[m].get("ci95")) for m in RUN_METRICS]
    intervals.append(("interpolated_fraction", summary.get("interpolated", {}).get("ci95")))
    for name, interval in intervals:
        columns[f"{name}_ci95_lo"] = interval[0] if interval else None
        columns[f"{name}_ci95_hi"] = interval[1] if interval else None
    return columns


def summary_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per cell: index, resolved params, <metric>_mean and <metric>_std, the
    interpolated fraction and the run count, then the interval bounds <metric>_ci95_lo/_hi."""
    rows = []
    for cell in sorted(cells, key=lambda c: c["index"]):
        row: dict[str, Any] = {"index": cell["index"], **cell["params"]}
        for name in RUN_METRICS:
            stats = cell["summary"][name]
            row[f"{name}_mean"] = stats["mean"]
            row[f"{name}_std"] = stats["std"]
        row["interpolated_fraction"] = cell["summary"]["interpolated_fraction"]
        row["runs"] = len(cell["runs"])
        row.update(_ci95_columns(cell["summary"]))
        rows.append(row)
    return rows


def cells_to_csv(cells: list[dict[str, Any]]) -> str:
    rows = summary_rows(cells)
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, names joined by "_" (`max_margin.test_error` becomes
    `max_margin_test_error`); lists (a run's trajectory) are left out: not one value."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}_"))
        elif not isinstance(value, list):
            flat[f"{prefix}{name}"] = value
    return flat


def run_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per run: the cell's index and resolved params, then every scalar the run
    reports, flattened (`seed` is the run's own seed)."""
    return [
        {"index": cell["index"], **cell["params"], **flatten(run)}
        for cell in sorted(cells, key=lambda c: c["index"])
        for run in cell["runs"]
    ]
