"""Fit the cost estimate's default model on this machine and write it into bo_engine/.

Runs a set of small-to-medium specs (each --repeats times, keeping the fastest: the machine is
shared) through the worker's engine path (`plan_batches`, then `runner.batch_cells` per batch),
records every finished cell as a worker does (`bo_engine.estimate.cell_record`), fits the steps
model and the CPU throughput (`bo_engine.estimate.fit`) and writes the model
(bo_engine/estimate_default.json) and the records it was fitted on
(bo_engine/estimate_records.json: a refit from a deployment's history fits the steps on them
too). No GPU data: the default has no "gpu" entry.

    env -u OMP_NUM_THREADS .venv/bin/python -m bench.fit_estimate [--repeats 2]
    .venv/bin/python -m bench.fit_estimate --from-records bo_engine/estimate_records.json

Takes a few minutes on 2 cores; run it with the machine as quiet as you can.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bo_engine.estimate import DEFAULT_FILE, DEFAULT_RECORDS, EstimateModel, cell_record, fit
from bo_engine.plan import plan_batches
from bo_engine.spec import JobSpec
from jobmodel.settings import Settings

BASE = {"width": 64, "alpha": 0.1, "corruption_rate": 0.1, "n_test": 1000, "seeds": 10}
# One job (so one batch) per (n, d/n): the throughput is fitted on many batches.
SPECS: list[dict[str, Any]] = [
    *(
        {**BASE, "n": n, "d": n * r, "grid": {"gamma_times_n": [0, 2, 8]}}
        for n in (30, 60, 120, 200, 300)
        for r in (1, 3, 8)
    ),
    *(
        {**BASE, "n": n, "stop": "zero_loss", "grid": {"d_over_n": [2, 6], "gamma_times_n": [1, 5]}}
        for n in (30, 80, 160)
    ),
]
# Until the first fit: a placeholder every part of which the records replace.
BLANK = EstimateModel(coef=(0.0,) * 8, spread=1.0, throughput={}, cpus=1)


def record_spec(job: str, spec: JobSpec) -> list[dict[str, Any]]:
    """Train `spec` batch by batch as a worker would; one record per finished cell."""
    from bo_engine import runner

    cpus = len(os.sched_getaffinity(0))
    records: list[dict[str, Any]] = []
    for batch in plan_batches(spec):
        started, wall_started = time.perf_counter(), time.time()

        def done(cell: dict[str, Any], started: float = started, at: float = wall_started) -> None:
            seconds = time.perf_counter() - started
            records.append(cell_record(job, cell, seconds, "cpu", cpus, at))

        runner.batch_cells(spec, batch, on_cell_done=done)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repeats", type=int, default=2, help="keep each spec's fastest")
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS, help="the raw records")
    parser.add_argument("--from-records", type=Path, help="fit these records; train nothing")
    args = parser.parse_args()
    if args.from_records:
        write(fit_records(json.loads(args.from_records.read_text())), args.out)
        return
    from bo_engine.loop import warm_up

    warm_up()  # as a worker does before its first task: compiling is not training
    records: list[dict[str, Any]] = []
    for k, body in enumerate(SPECS):
        spec = JobSpec.model_validate(body)
        tries = [record_spec(f"fit-{k}", spec) for _ in range(args.repeats)]
        fastest = min(tries, key=lambda found: max(r["seconds"] for r in found))
        records += fastest
        print(f"spec {k}: {spec.runs_total} runs, {max(r['seconds'] for r in fastest):.1f} s")
    args.records.write_text(json.dumps(records))
    write(fit_records(records), args.out)


def fit_records(records: list[dict[str, Any]]) -> EstimateModel:
    return fit(records, Settings().max_parallel_runs, BLANK)


def write(model: EstimateModel, out: Path) -> None:
    out.write_text(model.to_json() + "\n")
    print(model.to_json())


if __name__ == "__main__":
    main()
