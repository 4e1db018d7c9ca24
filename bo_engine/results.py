"""Result documents: per-cell summaries, flat table rows and CSV. numpy only, no torch."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

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


def describe(values: list[float | None]) -> dict[str, float | None]:
    """mean, sample std (0 for one value), min, max of the values that exist; None if none do."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = float(present.std(ddof=1)) if present.size > 1 else 0.0
    return {
        "mean": float(present.mean()),
        "std": std,
        "min": float(present.min()),
        "max": float(present.max()),
    }


def summarize_cell(index: int, cell: Cell, runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {m: describe([_metric(r, m) for r in runs]) for m in RUN_METRICS}
    summary["interpolated_fraction"] = sum(r["interpolated"] for r in runs) / len(runs)
    return {"index": index, "params": cell.params(), "runs": runs, "summary": summary}


def summary_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per cell: index, resolved params, then <metric>_mean and <metric>_std."""
    rows = []
    for cell in sorted(cells, key=lambda c: c["index"]):
        row: dict[str, Any] = {"index": cell["index"], **cell["params"]}
        for name in RUN_METRICS:
            stats = cell["summary"][name]
            row[f"{name}_mean"] = stats["mean"]
            row[f"{name}_std"] = stats["std"]
        row["interpolated_fraction"] = cell["summary"]["interpolated_fraction"]
        row["runs"] = len(cell["runs"])
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
