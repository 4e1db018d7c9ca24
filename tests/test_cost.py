"""The cost model (`bo_engine.cost`): it counts every phase of a run, and its memory estimate
is never below what a real run holds at its peak (measured in a fresh process)."""

from __future__ import annotations

import pytest

from bo_engine import cost
from bo_engine.cost import job_cost, run_cost
from bo_engine.spec import JobSpec
from tests.engine_helpers import last_number_printed

pytestmark = pytest.mark.fast

PEAK_RSS = """
import json, resource, sys
from bo_engine.runner import run_spec
from bo_engine.spec import JobSpec
run_spec(JobSpec.model_validate(json.loads(sys.argv[1])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _run(spec: JobSpec) -> float:
    return run_cost(
        spec.cells[0],
        dtype=spec.dtype,
        device=spec.device,
        record_every=spec.record_every,
        baseline=spec.max_margin_baseline,
    ).work


@pytest.mark.parametrize(
    ("field", "small", "large"),
    [
        ("n", 100, 400),
        ("d", 200, 20_000),
        ("width", 16, 512),
        ("n_test", 100, 100_000),
        ("max_steps", 10, 10_000),
    ],
)
def test_work_grows_with_every_size(field: str, small: int, large: int) -> None:
    base = {"n": 100, "d": 400, "width": 16, "n_test": 100, "max_steps": 10}
    spec = JobSpec.model_validate({**base, field: small})
    bigger = JobSpec.model_validate({**base, field: large})
    assert _run(bigger) > 2 * _run(spec)


def test_the_baseline_and_the_trajectory_are_counted() -> None:
    plain = JobSpec.model_validate({"n": 1000, "d": 2000, "max_steps": 1000})
    no_baseline = plain.model_copy(update={"max_margin_baseline": False})
    recorded = plain.model_copy(update={"record_every": 1})
    assert _run(plain) > _run(no_baseline) + 1000**2 * 2000  # Q = (y y^T) X X^T at least
    assert _run(recorded) > _run(plain) + 1000 * 16 * 1000**2  # ||W|| at every step
    cost = job_cost(recorded, parallel_runs=1)
    assert cost.max_trajectory_points == 1002
    assert cost.result_bytes > 1000 * 100  # each point is about 200 bytes of JSON


def test_a_gram_run_holds_no_inputs_whatever_d() -> None:
    """The Gram form accumulates its products over chunks of d: n = 2000, d = 50000 (3.5 GB when
    the inputs were built whole) holds under 512 MiB beyond the process, the same at any d, and
    counts the baseline's factors."""
    n = 2000
    peaks = [
        job_cost(
            JobSpec.model_validate({"n": n, "d": d, "width": 2, "max_steps": 1, "n_test": 1}),
            parallel_runs=1,
        ).peak_batch_bytes
        for d in (50_000, 1_000_000)
    ]
    assert peaks[0] == peaks[1] < cost.PROCESS_BYTES + 2**29
    assert peaks[0] > 5 * 8 * n * n


def test_a_cpu_holds_parallel_runs_at_once_a_gpu_the_whole_batch() -> None:
    spec = JobSpec.model_validate({"n": 500, "d": 5000, "seeds": 64, "max_steps": 1})
    one, eight = (job_cost(spec, parallel_runs=k).peak_batch_bytes for k in (1, 8))
    assert eight > 6 * (one - cost.PROCESS_BYTES)
    gpu = job_cost(spec.model_copy(update={"device": "cuda"}), parallel_runs=1)
    assert gpu.peak_batch_bytes > 64 * 8 * 500 * 500  # every run's float64 Gram matrix at once


@pytest.mark.parametrize(
    "body",
    [
        {"n": 200, "d": 50_000, "width": 2, "max_steps": 1, "n_test": 1},
        {"n": 100, "d": 1000, "width": 2048, "max_steps": 5, "n_test": 1000},
        {"n": 1000, "d": 2000, "width": 16, "max_steps": 10, "n_test": 10},
    ],
    ids=["large d", "large width", "baseline"],
)
def test_memory_estimate_is_never_below_the_measured_peak(body: dict) -> None:
    peak = last_number_printed(PEAK_RSS, body)
    estimate = job_cost(JobSpec.model_validate(body), parallel_runs=1).peak_batch_bytes
    assert estimate >= peak, f"estimated {estimate / 2**20:.0f} MiB, measured {peak / 2**20:.0f}"


def test_the_data_chunk_matches_the_engine() -> None:
    from bo_engine import data

    assert cost.DATA_CHUNK_COLUMNS == data.CHUNK_COLUMNS


def test_the_baseline_solve_is_an_uninterruptible_stage() -> None:
    with_baseline = JobSpec.model_validate({"n": 2000, "d": 4000, "max_steps": 1})
    without = with_baseline.model_copy(update={"max_margin_baseline": False})
    assert job_cost(with_baseline, parallel_runs=1).max_stage_work >= 2000**3
    assert job_cost(without, parallel_runs=1).max_stage_work < 2000**3 / 10
