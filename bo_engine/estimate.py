"""What a job will take before it runs: GD steps per run as a range, and wall seconds.

Two fitted parts, both refitted from what workers record (`cell_record`, one per finished cell):

**Steps per run.** A log-linear model of a cell's mean steps per run, fitted by least squares
on every recorded cell:

    log steps = b0 + b1 log n + b2 log(gamma n + GAMMA_N_EPS) + b3 log(d / n) + b4 [zero_loss]
                + [gamma = 0] (b5 + b6 log(d / n)) + b7 log(d / n)^2
                - log(lr width n)          (a fixed offset: 0 at the default step size)

Without signal (gamma = 0) a run is another regime: with d >= 3n it interpolates its random
labels in a few steps, so that case has its own intercept and d/n slope. With 10 % label noise,
steps *grow* with gamma n here: the signal fits the clean points at once and then fights the
flipped ones. Cell means, not single runs, are fitted: single runs of one cell spread over two
orders of magnitude (1 to 300 steps), and a job costs the sum, which the means predict (on
`bench/fit_estimate.py`'s data: residual spread 0.42 in log, against 0.95 for single runs).

A run's range is the cell's fitted mean times exp(+-Z_SPREAD s), s the residuals' standard
deviation, capped at [1, max_steps]. A job's total is the sum of its cells' lognormal means,
seeds x exp(fit + s^2 / 2); the cells' residuals partly cancel, so its range is the total
times exp(+-Z_SPREAD s_job), s_job the log-spread of a sum of independent cells (at least
MIN_SPREAD).

**Seconds.** The work of a run is that of `bo_engine.cost` (the one cost model admission control
uses): `steps` GD steps of `cost.step_work` units plus the rest of `cost.run_cost` (data,
products, result, baseline). Units become seconds through two throughputs (units/s) fitted
per device kind from recorded batches, one for the fixed work and one for the steps, plus a
cost per step apart from its units: the cost model's weights are upper estimates, and on this
machine its fixed work runs several times slower per unit than its steps (which count every
point active; 10-17 % are), while small runs pay a per-step overhead the units miss. A CPU
worker trains a batch's runs `threads` at a time, so a batch takes the sum of its runs /
min(threads, runs), plus `cost.BATCH_UNITS`; a GPU trains them as one program (threads = 1).
Batches of a job run one after the other (one worker). The seconds are those of each run at
its mean steps; their range adds the throughput's spread s_rate to the steps'
(exp(+-Z_SPREAD sqrt(s_job^2 + s_rate^2))).

Pure: no I/O beyond reading the shipped default (`estimate_default.json` and the records it was
fitted on, `estimate_records.json`, both written by `bench/fit_estimate.py` on the project's
machine).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from bo_engine.cost import BATCH_UNITS, job_cost, run_cost, step_work, trained_in_loop
from bo_engine.plan import Batch, plan_batches
from bo_engine.spec import Cell, JobSpec

GAMMA_N_EPS = 0.5  # keeps log(gamma n) finite at gamma = 0 (no signal)
Z_SPREAD = 2.0  # half-width of a range, in residual standard deviations (about 95 %)
MIN_SPREAD = 0.1  # a fit on few points claims no less spread than this (log units)
MIN_CELLS_TO_FIT = 20  # recorded cells before the steps model is refitted from history
SAME_BATCH_S = 0.5  # cells whose batches started this close (same job) share a batch
DEFAULT_FILE = Path(__file__).with_name("estimate_default.json")
DEFAULT_RECORDS = Path(__file__).with_name("estimate_records.json")  # what it was fitted on
DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class Throughput:
    """Work units per second on one device kind, for a run's fixed work (data, products,
    result, baseline) and for its GD steps apart, the seconds each step costs besides its
    units (a call into the loop, the stop test), and the log-spread of batches around it."""

    fixed_units_per_s: float
    step_units_per_s: float
    seconds_per_step: float
    spread: float

    def seconds(self, fixed: float, step_units: float, steps: float) -> float:
        return (
            fixed / self.fixed_units_per_s
            + step_units / self.step_units_per_s
            + steps * self.seconds_per_step
        )


@dataclass(frozen=True)
class EstimateModel:
    """The fitted steps model and a throughput per device kind (absent: no data for it)."""

    coef: tuple[float, ...]
    spread: float
    throughput: dict[str, Throughput]
    cpus: int  # cores of the workers the throughput was measured on
    cells: int = 0  # cells the steps model was fitted on
    batches: dict[str, int] = field(default_factory=dict)  # batches per device kind

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EstimateModel:
        data = json.loads(text)
        data["coef"] = tuple(data["coef"])
        data["throughput"] = {k: Throughput(**v) for k, v in data["throughput"].items()}
        return cls(**data)


def default_model() -> EstimateModel:
    """The model fitted on this project's machine (`bench/fit_estimate.py`)."""
    return EstimateModel.from_json(DEFAULT_FILE.read_text())


def default_records() -> list[dict[str, Any]]:
    """The cells the default model was fitted on (`cell_record`s)."""
    return json.loads(DEFAULT_RECORDS.read_text())


# --- what workers record -----------------------------------------------------------------


def cell_record(
    job: str, cell: dict[str, Any], seconds: float, device: str, cpus: int, batch_started: float
) -> dict[str, Any]:
    """One finished cell of job `job` as the estimator learns from it: its resolved parameters,
    the steps of each run it trained (runs served from elsewhere, `cached`, took no training),
    the seconds since its batch started, the device kind ("cpu"/"gpu"), the worker's cores, and
    when (epoch seconds) its batch started, which groups cells into batches."""
    fields = set(Cell.model_fields)
    return {
        "job": job,
        "params": {k: v for k, v in cell["params"].items() if k in fields},
        "steps": [int(r["steps"]) for r in cell["runs"] if not r.get("cached")],
        "seconds": float(seconds),
        "device": device,
        "cpus": int(cpus),
        "batch_started": round(float(batch_started), 3),
    }


# --- the steps model -----------------------------------------------------------------------


def features(cell: Cell) -> list[float]:
    """The regressors of log steps (see the module's docstring)."""
    return [
        1.0,
        math.log(cell.n),
        math.log(cell.gamma * cell.n + GAMMA_N_EPS),
        math.log(cell.d / cell.n),
        1.0 if cell.stop == "zero_loss" else 0.0,
        1.0 if cell.gamma == 0 else 0.0,
        math.log(cell.d / cell.n) if cell.gamma == 0 else 0.0,
        math.log(cell.d / cell.n) ** 2,
    ]


def _offset(cell: Cell) -> float:
    """log steps moves as -log(step size) around the default step size 1/(width n)."""
    return -math.log(cell.lr * cell.width * cell.n)


def fit_steps(cells_steps: Iterable[tuple[Cell, float]]) -> tuple[tuple[float, ...], float, int]:
    """Least squares of log mean steps on `features`; the coefficients, residual sd and the
    number of cells."""
    pairs = list(cells_steps)
    x = np.array([features(c) for c, _ in pairs])
    y = np.array([math.log(max(s, 1)) - _offset(c) for c, s in pairs])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    dof = max(len(pairs) - len(coef), 1)
    spread = max(float(math.sqrt(residual @ residual / dof)), MIN_SPREAD)
    return tuple(float(c) for c in coef), spread, len(pairs)


def _log_steps(cell: Cell, model: EstimateModel) -> float:
    return float(np.dot(model.coef, features(cell))) + _offset(cell)


def _capped(log_steps: float, cell: Cell) -> float:
    """exp(log_steps) within [1, max_steps] (capped in log: far-out cells do not overflow)."""
    return math.exp(min(max(log_steps, 0.0), math.log(cell.max_steps)))


def steps_range(cell: Cell, model: EstimateModel) -> tuple[float, float]:
    """GD steps of the cell's average run: [lo, hi], within [1, max_steps]."""
    fitted = _log_steps(cell, model)
    lo, hi = (_capped(fitted + z * model.spread, cell) for z in (-Z_SPREAD, Z_SPREAD))
    return lo, hi


def steps_mean(cell: Cell, model: EstimateModel) -> float:
    """Expected GD steps of one run of `cell` (the lognormal mean), within [1, max_steps]."""
    return _capped(_log_steps(cell, model) + model.spread**2 / 2, cell)


def sum_spread(spread: float, means: list[float]) -> float:
    """Log-spread of a sum of independent lognormal terms with these means and log-spread."""
    total = sum(means)
    if total <= 0:
        return MIN_SPREAD
    relative_var = math.expm1(spread**2) * sum(m * m for m in means) / total**2
    return max(math.sqrt(math.log1p(relative_var)), MIN_SPREAD)


# --- work and seconds ------------------------------------------------------------------------


def run_parts(cell: Cell, spec: JobSpec, device: str) -> tuple[float, float]:
    """Work units of one run: its fixed work (`cost.run_cost` without its GD steps) and the
    work of one GD step (`cost.step_work`)."""
    cuda = "cuda" if device == "gpu" else "cpu"
    full = run_cost(
        cell,
        dtype=spec.dtype,
        device=cuda,
        record_every=spec.record_every,
        baseline=spec.max_margin_baseline,
    ).work
    step = step_work(cell, spec.dtype, trained_in_loop(cell, cuda))
    return full - cell.max_steps * step, step


Work = tuple[float, float, float]  # fixed units, step units, steps


def batch_units(runs: list[tuple[Work, int]], threads: int) -> Work:
    """Fixed units, step units and steps of one batch, per thread: its runs (each work with
    how many runs do it) train `threads` at a time (1 on a GPU: one program), plus
    `cost.BATCH_UNITS`."""
    share = max(1, min(threads, sum(count for _, count in runs)))
    fixed, units, steps = (
        sum(work[k] * count for work, count in runs) / share for k in range(3)
    )
    return fixed + BATCH_UNITS, units, steps


def threads_for(device: str, cpus: int, parallel_runs: int) -> int:
    return 1 if device == "gpu" else max(1, min(cpus, parallel_runs))


# --- fitting from records ------------------------------------------------------------------------


def _batches(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records grouped into the batches they came from (same job and device, start times
    within SAME_BATCH_S)."""
    ordered = sorted(records, key=lambda r: (r.get("job", ""), r["device"], r["batch_started"]))
    groups: list[list[dict[str, Any]]] = []
    for record in ordered:
        last = groups[-1][-1] if groups else None
        same = (
            last is not None
            and last.get("job") == record.get("job")
            and last["device"] == record["device"]
            and record["batch_started"] - last["batch_started"] <= SAME_BATCH_S
        )
        if same:
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


def _recorded_units(batch: list[dict[str, Any]], threads: int) -> Work:
    """The work of a recorded batch (`batch_units`) at the steps its runs took."""
    runs: list[tuple[Work, int]] = []
    for record in batch:
        fixed, step = run_parts(Cell(**record["params"]), _spec_of(record), record["device"])
        runs += [((fixed, s * step, s), 1) for s in record["steps"]]
    return batch_units(runs, threads)


def _fit_throughput(
    batches: list[list[dict[str, Any]]], parallel_runs: int
) -> tuple[dict[str, Throughput], dict[str, int]]:
    """Per device kind: wall = fixed / r_fixed + step units / r_step + steps x c over its
    batches, fitted by non-negative least squares on relative errors; the log-spread of the
    batches around it."""
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for batch in batches:
        device, wall = batch[0]["device"], max(r["seconds"] for r in batch)
        if wall > 0:
            threads = threads_for(device, batch[0]["cpus"], parallel_runs)
            rows.setdefault(device, []).append((*_recorded_units(batch, threads), wall))
    fitted = {}
    for device, data in rows.items():
        work = np.array([(f / w, u / w, s / w) for f, u, s, w in data])
        inverse, _ = nnls(work, np.ones(len(data)))
        if min(inverse[:2]) <= 0:  # too few batches to tell the parts apart: one rate
            units = work[:, :2]
            rate = float(np.sum(units) / np.sum(units**2))
            inverse = np.array([rate, rate, 0.0])
        fitted[device] = Throughput(
            fixed_units_per_s=float(1 / inverse[0]),
            step_units_per_s=float(1 / inverse[1]),
            seconds_per_step=float(inverse[2]),
            spread=max(float(np.std(np.log(work @ inverse))), MIN_SPREAD),
        )
    return fitted, {device: len(data) for device, data in rows.items()}


def _spec_of(record: dict[str, Any]) -> JobSpec:
    """The job-level facts the work of a recorded run depends on (the JobSpec defaults unless
    the record says otherwise)."""
    return JobSpec(n=2, d=1, **record.get("job_fields", {}))


def fit(
    records: list[dict[str, Any]],
    parallel_runs: int,
    fallback: EstimateModel,
    prior: list[dict[str, Any]] | None = None,
) -> EstimateModel:
    """A model refitted from `records`. Steps depend on the cells, not on the machine, so their
    model is fitted on `prior` records too (the default's: a history of only small jobs still
    predicts large ones); the throughput on `records` alone. Each part falls back to
    `fallback`'s where the records are too few (under MIN_CELLS_TO_FIT cells, or no batch of a
    device kind)."""
    cells = [*(prior or []), *records]
    pairs = [(Cell(**r["params"]), float(np.mean(r["steps"]))) for r in cells if r["steps"]]
    coef, spread, cells = (
        fit_steps(pairs) if len(pairs) >= MIN_CELLS_TO_FIT
        else (fallback.coef, fallback.spread, fallback.cells)
    )
    throughput, counts = _fit_throughput(_batches(records), parallel_runs)
    cpu_records = [r["cpus"] for r in records if r["device"] == "cpu"]
    return EstimateModel(
        coef=coef,
        spread=spread,
        throughput={**fallback.throughput, **throughput},
        cpus=int(np.median(cpu_records)) if cpu_records else fallback.cpus,
        cells=cells,
        batches={**fallback.batches, **counts},
    )


# --- the estimate of a job -------------------------------------------------------------------


@dataclass(frozen=True)
class JobEstimate:
    cells: int
    runs: int
    runs_cached: int
    runs_to_train: int
    gd_steps: tuple[float, float]
    seconds: dict[str, tuple[float, float] | None]
    peak_batch_bytes: int


def _job_seconds(
    spec: JobSpec,
    batches: list[Batch],
    means: list[float],
    to_train: list[int],
    model: EstimateModel,
    device: str,
    parallel_runs: int,
) -> float | None:
    """Wall seconds of the job's batches, one after the other, on `device`, each of the
    `to_train` runs of a cell taking its mean steps; None without a throughput for it."""
    rate = model.throughput.get(device)
    if rate is None:
        return None
    threads = threads_for(device, model.cpus, parallel_runs)
    seconds = 0.0
    for batch in batches:
        runs = []
        for i in batch.cell_indices:
            fixed, step = run_parts(spec.cells[i], spec, device)
            if to_train[i]:
                runs.append(((fixed, means[i] * step, means[i]), to_train[i]))
        if runs:  # a batch whose runs are all cached trains nothing
            seconds += rate.seconds(*batch_units(runs, threads))
    return seconds


def _widened(value: float, spread: float) -> tuple[float, float]:
    return value * math.exp(-Z_SPREAD * spread), value * math.exp(Z_SPREAD * spread)


def estimate(
    spec: JobSpec,
    model: EstimateModel,
    *,
    parallel_runs: int,
    cached_runs: Mapping[int, int] | None = None,
) -> JobEstimate:
    """The job's cells and runs, its GD steps and seconds as [lo, hi] ranges for the runs still
    to train (`cached_runs`: cell index -> runs of it the run cache holds), and the peak memory
    of its largest batch (`bo_engine.cost`)."""
    cached = cached_runs or {}
    to_train = [max(0, c.seeds - cached.get(i, 0)) for i, c in enumerate(spec.cells)]
    means = [steps_mean(cell, model) for cell in spec.cells]
    per_cell = [k * m for k, m in zip(to_train, means, strict=True)]
    spread = sum_spread(model.spread, per_cell)
    steps = _widened(sum(per_cell), spread)
    batches = plan_batches(spec)
    seconds: dict[str, tuple[float, float] | None] = {}
    for device in DEVICES:
        point = _job_seconds(spec, batches, means, to_train, model, device, parallel_runs)
        rate_spread = model.throughput[device].spread if point is not None else 0.0
        seconds[device] = (
            None if point is None else _widened(point, math.hypot(spread, rate_spread))
        )
    runs = spec.runs_total
    return JobEstimate(
        cells=len(spec.cells),
        runs=runs,
        runs_cached=runs - sum(to_train),
        runs_to_train=sum(to_train),
        gd_steps=(round(steps[0]), round(steps[1])),
        seconds=seconds,
        peak_batch_bytes=job_cost(spec, parallel_runs=parallel_runs).peak_batch_bytes,
    )
