"""The golden runs (tests/golden.py): numbers change only with NUMERICS_VERSION."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import bo_engine
from tests.golden import GOLDEN_FILE, SPECS, golden_cells

pytestmark = pytest.mark.fast
REL_TOL = 1e-6  # the same machine gives the same bits; this leaves room for BLAS builds only


def _differences(pinned: Any, now: Any, where: str = "") -> list[str]:
    """Where `now` differs from `pinned`: floats beyond REL_TOL, anything else at all."""
    if isinstance(pinned, dict) and isinstance(now, dict):
        found = [f"{where}.{k}: missing or extra" for k in set(pinned) ^ set(now)]
        for k in set(pinned) & set(now):
            found += _differences(pinned[k], now[k], f"{where}.{k}")
        return found
    if isinstance(pinned, list) and isinstance(now, list) and len(pinned) == len(now):
        return [
            d
            for i, (a, b) in enumerate(zip(pinned, now, strict=True))
            for d in _differences(a, b, f"{where}[{i}]")
        ]
    both_floats = isinstance(pinned, float) and isinstance(now, float)
    if both_floats and math.isclose(pinned, now, rel_tol=REL_TOL, abs_tol=1e-12):
        return []
    return [] if pinned == now else [f"{where}: pinned {pinned!r}, now {now!r}"]


def test_golden_runs_change_only_with_the_numerics_version() -> None:
    golden = json.loads(GOLDEN_FILE.read_text())
    if golden["numerics_version"] != bo_engine.NUMERICS_VERSION:
        pytest.fail(
            f"NUMERICS_VERSION is {bo_engine.NUMERICS_VERSION}, the golden runs were made with "
            f"{golden['numerics_version']}: regenerate them with `make golden` "
            "(.venv/bin/python -m tests.golden) and commit tests/golden_runs.json"
        )
    assert golden["specs"] == SPECS, "the golden specs changed: regenerate with `make golden`"
    problems = _differences(golden["cells"], golden_cells())
    assert not problems, (
        "a run's numbers changed while NUMERICS_VERSION did not: bump bo_engine.NUMERICS_VERSION "
        "(then `make golden`), or undo the change. First differences: " + "; ".join(problems[:8])
    )


def test_the_golden_specs_cover_both_stop_rules_and_both_corruption_forms() -> None:
    assert {s.get("stop", "zero_train_error") for s in SPECS.values()} == {
        "zero_train_error",
        "zero_loss",
    }
    assert any("num_corrupt" in s for s in SPECS.values())
    assert any("num_corrupt" not in s for s in SPECS.values())
