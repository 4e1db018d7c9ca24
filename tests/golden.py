"""Golden runs: the full results of a few small specs, pinned with the NUMERICS_VERSION that
made them (tests/golden_runs.json). Both stop rules, both forms of corruption, both dtypes, and
both CPU training paths (the compiled loop; the batched program, for d well below n).

Regenerate after a change that bumps `bo_engine.NUMERICS_VERSION`:

    .venv/bin/python -m tests.golden        (or: make golden)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bo_engine

GOLDEN_FILE = Path(__file__).with_name("golden_runs.json")
_COMMON = {"device": "cpu", "n_test": 200, "max_steps": 4000}
SPECS: dict[str, dict[str, Any]] = {
    "zero_train_error_rate_f32": {**_COMMON, "n": 20, "d": 40, "seeds": 2},
    "zero_loss_count_f64_trajectory": {
        **_COMMON,
        "n": 20,
        "d": 40,
        "stop": "zero_loss",
        "num_corrupt": 2,
        "dtype": "float64",
        "record_every": 500,
    },
    "zero_train_error_count_plain_form": {**_COMMON, "n": 40, "d": 8, "num_corrupt": 3},
    "zero_loss_rate_grid": {
        **_COMMON,
        "grid": {"n": [16, 24], "gamma_times_n": [2]},
        "d": 48,
        "stop": "zero_loss",
        "corruption_rate": 0.2,
        "max_margin_baseline": False,
    },
}


def golden_cells() -> dict[str, list[dict[str, Any]]]:
    """Each spec's cells, trained here on the CPU: index, params and every run in full. (Not
    the summaries: they are derived from the runs, and their format is not numerics.)"""
    from bo_engine.runner import run_spec
    from bo_engine.spec import JobSpec

    def pinned(cell: dict[str, Any]) -> dict[str, Any]:
        return {k: cell[k] for k in ("index", "params", "runs")}

    return {
        name: [pinned(cell) for cell in run_spec(JobSpec.model_validate(s))["cells"]]
        for name, s in SPECS.items()
    }


def write() -> None:
    doc = {"numerics_version": bo_engine.NUMERICS_VERSION, "specs": SPECS, "cells": golden_cells()}
    GOLDEN_FILE.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_FILE} (NUMERICS_VERSION {bo_engine.NUMERICS_VERSION})")


if __name__ == "__main__":
    write()
