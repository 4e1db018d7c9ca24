"""Seeds make results reproducible: the same spec twice, batch by batch, and cell by cell."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch

from bo_engine.plan import assemble_result, plan_batches
from bo_engine.runner import batch_cells, engine_info, run_spec
from bo_engine.spec import JobSpec

pytestmark = pytest.mark.fast

CPU = torch.device("cpu")

# Two Gram-form shapes (n = 12 and 16 with d >= n/4) and plain-form cells (d = 2 < n/4), both
# stop rules, one flipped label, 2 seeds per cell, trajectories on: 16 runs in about a second.
# (The baseline of a non-separable set takes the slow solver path, so it is off here and checked
# on separable cells below.)
SPEC = {
    "grid": {"n": [12, 16], "d": [2, 30], "stop": ["zero_train_error", "zero_loss"]},
    "width": 4,
    "gamma": 0.2,
    "num_corrupt": 1,
    "n_test": 50,
    "max_steps": 400,
    "seeds": 2,
    "record_every": 50,
    "max_margin_baseline": False,
}


def spec(**changes: Any) -> JobSpec:
    return JobSpec.model_validate({**copy.deepcopy(SPEC), **changes})


def without_wall_time(result: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(result)
    del result["engine"]["wall_seconds"]
    return result


@pytest.fixture(scope="module", params=["float64", "float32"])
def first_run(request) -> tuple[JobSpec, dict[str, Any]]:
    s = spec(dtype=request.param)
    return s, run_spec(s, device=CPU)


def test_result_document_shape(first_run) -> None:
    s, result = first_run
    assert [c["index"] for c in result["cells"]] == list(range(len(s.cells)))
    for cell, expected in zip(result["cells"], s.cells, strict=True):
        assert cell["params"] == expected.params()
        assert [r["seed"] for r in cell["runs"]] == [expected.seed, expected.seed + 1]
    assert result["engine"]["dtype"] == s.dtype and result["engine"]["device"] == "cpu"


def test_same_seed_same_result(first_run) -> None:
    s, result = first_run
    # As the service passes it on: the JSON of the fields the user set.
    again = run_spec(JobSpec.model_validate_json(s.model_dump_json(exclude_unset=True)), device=CPU)
    # Compared as JSON text: every number bit for bit, every key, every list order.
    assert json.dumps(without_wall_time(again), sort_keys=True) == json.dumps(
        without_wall_time(result), sort_keys=True
    )


def test_same_seed_same_result_with_the_baseline() -> None:
    s = spec(grid={"n": [12, 16]}, d=30, max_margin_baseline=True, dtype="float64")
    first, again = run_spec(s, device=CPU), run_spec(s, device=CPU)
    assert all(r["max_margin"]["separable"] for c in first["cells"] for r in c["runs"])
    assert without_wall_time(first) == without_wall_time(again)


def test_batches_reproduce_run_spec(first_run) -> None:
    """The worker's path (plan_batches, then batch_cells per batch, in any order) gives the local
    path's result exactly."""
    s, result = first_run
    batches = plan_batches(s)
    assert sorted(i for b in batches for i in b.cell_indices) == list(range(len(s.cells)))
    cells = [cell for b in reversed(batches) for cell in batch_cells(s, b, device=CPU)]
    assembled = assemble_result(s, cells, engine_info(CPU, s.dtype, 0.0))
    assert without_wall_time(assembled) == without_wall_time(result)


def test_different_seeds_differ(first_run) -> None:
    s, result = first_run
    other = run_spec(spec(dtype=s.dtype, seed=100), device=CPU)
    for a, b in zip(result["cells"], other["cells"], strict=True):
        assert a["params"]["seed"] == 0 and b["params"]["seed"] == 100
        for ra, rb in zip(a["runs"], b["runs"], strict=True):
            assert ra["weight_norm"] != rb["weight_norm"]
            assert (ra["steps"], ra["test_error"], ra["margin"]) != (
                rb["steps"],
                rb["test_error"],
                rb["margin"],
            )


def test_the_two_seeds_of_a_cell_differ(first_run) -> None:
    _, result = first_run
    for cell in result["cells"]:
        first, second = cell["runs"]
        assert first["weight_norm"] != second["weight_norm"]


def test_a_cell_gives_the_same_runs_alone_as_in_a_grid() -> None:
    """A run is identified by its cell and seed (the result cache's premise): training it alone
    or batched with other cells gives the same numbers (float64, to rounding)."""
    grid = run_spec(spec(dtype="float64"), device=CPU)
    for cell in grid["cells"]:
        params = cell["params"]
        alone = spec(dtype="float64", grid=None, n=params["n"], d=params["d"], stop=params["stop"])
        (single,) = run_spec(alone, device=CPU)["cells"]
        assert single["params"] == params
        for ra, rb in zip(cell["runs"], single["runs"], strict=True):
            assert ra["steps"] == rb["steps"] and ra["stop_reason"] == rb["stop_reason"]
            for key in ("margin", "weight_norm", "test_error", "param_snr", "train_loss"):
                assert ra[key] == pytest.approx(rb[key], rel=1e-9, abs=1e-12), key
