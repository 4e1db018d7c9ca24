"""What a job costs before it runs: work, peak memory and result size, phase by phase.

One model, used by admission control (`service.limits`), the benchmarks (`bench/cost.py`) and
anything else that estimates cost. Every figure is an upper estimate for the path a run takes
(`bo_engine.train`): all runs are assumed to use every one of their `max_steps` with every
training point active, which a run that never stops (a tiny step size) really does.

**Work** is counted in units of one float64 multiply-add of a large matrix product (what a
BLAS core does fastest), so seconds = units / (this machine's GEMM rate per core). Phases that
run slower per operation carry a weight, measured on the project's CPU (`bench/cost.py`):

    data        each of the n d inputs, width d initial weights and n_test (width + 1) test
                outputs is a random draw (then mixed): DATA_UNITS each
    products    G = X X^T (n^2 d), Z0 = W0 X^T (width n d) and W0 W0^T (width^2 d)
    training    max_steps x one step: f = a^T sigma(Z) (width n) + the update; the compiled loop
                sums u (n |A|) and, per row, the smaller side of its active set (width n |A|/2:
                what the direct step does; from `bo_engine.loop.INCREMENTAL_MIN_N` points the
                loop adjusts kept sums by the points that change instead, in practice 50-150
                rows of G a step at n = 1600, but a row rebuilt from scratch adds its
                exceptions in A, which the |A|/2 of the count bounds only when under half of A
                disagrees with the row);
                the batched program does a dense width n^2 (Gram) or 2 width n d (plain) update
                plus a fixed dispatch cost per step
    recording   every `record_every` steps a trajectory point: ||W|| from C G (width n^2) and
                POINT_UNITS of Python
    result      W W^T = W0 W0^T + 2 sym(C Z0^T) + C G C^T (width n^2 + width^2 n), the
                Cholesky factor of the test outputs' covariance (width^3) and the outputs
                themselves (n_test width^2)
    baseline    the dual NNLS on Q = (y y^T) G (NNLS_UNITS n^3)

**Memory** of a Gram-form run does not grow with d: the products it trains and reports from
(G, Z0 = W0 X^T, X v, W0 v, W0 W0^T: `bo_engine.products`) are accumulated over chunks of
DATA_CHUNK_COLUMNS coordinates, so it holds them, one chunk's draw (float32 noise and its float64
copy, W0's columns) and an n x n temporary, plus the largest later phase: the training state in
the run's dtype (G, Z0, Z, C and the loop's sums), the results' width x width moments and test
outputs, or the baseline's Q and its factors (5 n^2). In float64 bytes, with c = min(d, chunk):

    peak = 8 (2 n^2 + 2 m n + m^2) + c (12 n + 8 m) + max(training, results, 5 n^2 baseline)

A plain-form run (d < n / 4) forms X and W0 whole (twice n d while X is formed) instead.
Plus the process itself (PROCESS_BYTES: Python, torch, numba, scipy). A CPU trains a batch's
runs `parallel_runs` at a time, each holding its own; the batched program holds every run of a
batch at once.

**Result size** is the JSON of each run (RUN_JSON_BYTES) and of its trajectory points
(POINT_JSON_BYTES each): what the job store keeps and `/results` sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bo_engine.plan import Batch, plan_batches
from bo_engine.spec import Cell, JobSpec, uses_gram_form

DTYPE_BYTES = {"float32": 4, "float64": 8}
F64 = 8

# Work weights, in GEMM multiply-adds (bench/cost.py measures them against the real phases).
DATA_UNITS = 800.0  # per random coordinate: a normal draw, float64 copy, projection, mix
LOOP_UNITS = {"float32": 3.5, "float64": 5.0}  # per multiply-add of the compiled loop
BATCHED_STEP_UNITS = 2e6  # per step of the batched program: ~15 kernel launches
POINT_UNITS = 2e6  # per trajectory point: a return to Python, the fit metrics, ||W||
NNLS_UNITS = 12.0  # per n^3 of the max-margin dual (Cholesky + Lawson-Hanson NNLS)
RUN_UNITS = 5e7  # per run: seeding, Python bookkeeping, the result document
BATCH_UNITS = 1e9  # per batch: starting its task, its thread pool, first calls

# Memory constants, in bytes.
PROCESS_BYTES = 768 << 20  # a worker with torch, numba, scipy; numba compiling on a cold cache
# Coordinates per chunk of the draw (bo_engine.data.CHUNK_COLUMNS); a chunk's noise is drawn in
# float32 and used in float64, W0's columns in float64.
DATA_CHUNK_COLUMNS = 4096
NOISE_BYTES_PER_NUMBER = 4 + F64
RUN_JSON_BYTES = 700  # one run's result without its trajectory
CELL_JSON_BYTES = 2500  # one cell's params and summary
POINT_JSON_BYTES = 200  # one trajectory point


@dataclass(frozen=True)
class RunCost:
    """One run of a cell: work units, peak bytes while it trains, result JSON bytes."""

    work: float
    peak_bytes: int
    result_bytes: int
    stage_work: float  # the costliest stage no cancel can interrupt: a GD step or the NNLS
    trajectory_points: int


@dataclass(frozen=True)
class JobCost:
    work: float  # units, all runs
    peak_batch_bytes: int  # the largest batch, process included
    result_bytes: int  # the whole result document
    max_stage_work: float  # the costliest uninterruptible stage of any run
    max_trajectory_points: int  # per run


def trained_in_loop(cell: Cell, device: str) -> bool:
    """The path `bo_engine.train` takes: the compiled loop for Gram-form runs on a CPU."""
    return device != "cuda" and uses_gram_form(cell.n, cell.d)


def trajectory_points(cell: Cell, record_every: int | None) -> int:
    """Points a run records at most: steps 0, k, 2k, ... up to max_steps, and its last."""
    return 0 if record_every is None else cell.max_steps // record_every + 2


def step_work(cell: Cell, dtype: str, in_loop: bool) -> float:
    """Work units of one GD step with every point active."""
    m, n = cell.width, cell.n
    if in_loop:
        return LOOP_UNITS[dtype] * (m * n + n * n + m * n * (1 + n / 2))
    update = m * n * n if uses_gram_form(n, cell.d) else 2 * m * n * cell.d
    return m * n + update + BATCHED_STEP_UNITS


def run_cost(
    cell: Cell, *, dtype: str, device: str, record_every: int | None, baseline: bool
) -> RunCost:
    """The whole of one run: data, products, training, recording, result and baseline."""
    m, n, d, t = cell.width, cell.n, cell.d, cell.n_test
    step = step_work(cell, dtype, trained_in_loop(cell, device))
    points = trajectory_points(cell, record_every)
    work = (
        RUN_UNITS
        + DATA_UNITS * ((n + m) * d + t * (m + 1))
        + (n * n + m * n + m * m) * d
        + cell.max_steps * step
        + points * (POINT_UNITS + m * n * n)
        + m * n * n
        + m * m * n
        + m**3
        + t * m * m
        + (n * n + NNLS_UNITS * n**3 if baseline else 0)
    )
    size = DTYPE_BYTES[dtype]
    plain = 0 if uses_gram_form(n, d) else size * (n + m) * d  # X and W in the run's dtype
    peak = data_bytes(cell) + max(
        size * (n * n + 4 * m * n) + m * n + plain,  # training state: G, Z0, Z, C, s, P
        F64 * (4 * m * m + m * n) + 3 * F64 * t * (m + 1),  # moments, C G; test outputs
        5 * F64 * n * n if baseline else 0,  # Q, its factor, NNLS's copies
    )
    result = RUN_JSON_BYTES + POINT_JSON_BYTES * points
    stage = max(step, NNLS_UNITS * n**3 if baseline else 0)
    return RunCost(work, int(peak), result, stage, points)


def data_bytes(cell: Cell) -> int:
    """Peak bytes of drawing one run's data: its products (kept for the run) with an n x n
    temporary and one chunk in the Gram form; X and W0 whole, twice, in the plain form."""
    m, n, d = cell.width, cell.n, cell.d
    products = F64 * (2 * n * n + 2 * m * n + m * m + 3 * n)
    chunk = min(d, DATA_CHUNK_COLUMNS) * (NOISE_BYTES_PER_NUMBER * n + F64 * (m + 1))
    if uses_gram_form(n, d):
        return products + chunk
    return products + chunk + 2 * F64 * (n + m) * d


def job_cost(
    spec: JobSpec, *, parallel_runs: int, cached_runs: Mapping[int, int] | None = None
) -> JobCost:
    """Every run of the job, and its costliest batch as `bo_engine.train` would hold it. The
    work counts only runs to train: `cached_runs` (cell index -> runs of it the run cache
    holds) cost nothing, nor does a batch with nothing left to train."""
    cached = cached_runs or {}
    runs = [
        run_cost(
            cell,
            dtype=spec.dtype,
            device=spec.device,
            record_every=spec.record_every,
            baseline=spec.max_margin_baseline,
        )
        for cell in spec.cells
    ]
    pairs = list(zip(spec.cells, runs, strict=True))
    batches = plan_batches(spec)
    worst_batch = 0
    for batch in batches:
        costs = [(spec.cells[i], runs[i]) for i in batch.cell_indices]
        worst_batch = max(worst_batch, _batch_bytes(costs, spec, parallel_runs))
    return JobCost(
        work=BATCH_UNITS * sum(_trains(b, spec, cached) for b in batches)
        + sum((c.seeds - cached.get(i, 0)) * r.work for i, (c, r) in enumerate(pairs)),
        peak_batch_bytes=PROCESS_BYTES + worst_batch,
        result_bytes=sum(CELL_JSON_BYTES + c.seeds * r.result_bytes for c, r in pairs),
        max_stage_work=max(r.stage_work for r in runs),
        max_trajectory_points=max(r.trajectory_points for r in runs),
    )


def _trains(batch: Batch, spec: JobSpec, cached: Mapping[int, int]) -> bool:
    return any(spec.cells[i].seeds > cached.get(i, 0) for i in batch.cell_indices)


def _batch_bytes(costs: list[tuple[Cell, RunCost]], spec: JobSpec, parallel_runs: int) -> int:
    """Peak bytes of one batch: `parallel_runs` runs at a time in the loop, else all at once
    (inputs kept for the results, and the stacked state padded to the batch's largest n)."""
    peaks = sorted((r.peak_bytes for c, r in costs for _ in range(c.seeds)), reverse=True)
    if trained_in_loop(costs[0][0], spec.device):
        return sum(peaks[:parallel_runs])
    n = max(c.n for c, _ in costs)
    size = DTYPE_BYTES[spec.dtype]
    held = sum(
        c.seeds * (_held_inputs(c, size) + size * (n * n + 3 * c.width * n)) for c, _ in costs
    )
    return held + peaks[0]


def _held_inputs(cell: Cell, size: int) -> int:
    """What the batched program keeps of one run besides its stacked state: the products (and
    in the plain form X and W0, in float64 and in the run's dtype)."""
    m, n, d = cell.width, cell.n, cell.d
    products = F64 * (n * n + 2 * m * n + m * m + 3 * n)
    return products if uses_gram_form(n, d) else products + (F64 + size) * (n + m) * d
