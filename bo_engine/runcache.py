"""Run identity, and the cache logic every run cache shares (Redis in `jobmodel.runcache`, a
directory in `bolab.local_cache`). Torch-free: the API computes keys too.

A run's numbers are a pure function of its resolved cell parameters, its seed, the dtype, the
training path (the CPU's compiled loop and the batched tensor program agree only up to
rounding) and `bo_engine.NUMERICS_VERSION`. Its document also depends on what the job asked it
to carry: a trajectory every `record_every` steps, the max-margin baseline. The run key hashes
all of these, so a run is served only to a job that would have produced the same document.
`theory` is derived from public parameters and the asking job's constants: a served run gets
it recomputed, as it would have been trained for that job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import bo_engine
from bo_engine.cost import trained_in_loop
from bo_engine.spec import Cell, JobSpec
from bo_engine.theory import theory

TrainingPath = Literal["loop", "tensor-cpu", "tensor-cuda"]
# Cell fields that are not a run's parameters: a run has one seed of its own.
_NOT_RUN_PARAMS = {"seeds", "seed"}


def training_path(cell: Cell, device_type: str) -> TrainingPath:
    """How `bo_engine.train` trains this cell on a device of this type ("cpu" or "cuda")."""
    if trained_in_loop(cell, device_type):
        return "loop"
    return "tensor-cuda" if device_type == "cuda" else "tensor-cpu"


def run_identity(
    cell: Cell,
    seed: int,
    *,
    dtype: str,
    path: str,
    record_every: int | None,
    max_margin_baseline: bool,
) -> dict[str, Any]:
    """Everything that makes a run's document what it is, as plain JSON values."""
    params = cell.model_dump(mode="json", exclude=_NOT_RUN_PARAMS)
    # Floats as floats: a gamma of 0 given as an int must hash like 0.0.
    for name, value in params.items():
        if Cell.model_fields[name].annotation in (float, float | None) and value is not None:
            params[name] = float(value)
    return {
        "params": params,
        "seed": seed,
        "dtype": dtype,
        "path": path,
        "numerics": bo_engine.NUMERICS_VERSION,
        "record_every": record_every,
        "max_margin_baseline": max_margin_baseline,
    }


def run_key(cell: Cell, seed: int, **identity: Any) -> str:
    """sha256 of the canonical JSON of `run_identity` (hex, 64 digits)."""
    text = json.dumps(run_identity(cell, seed, **identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RunRef:
    """One run of a job: its cell (index into `spec.cells`), its seed and its run key."""

    cell_index: int
    seed: int
    key: str

    @property
    def slot(self) -> tuple[int, int]:
        return (self.cell_index, self.seed)


def run_refs(spec: JobSpec, cell_indices: Iterable[int], device_type: str) -> list[RunRef]:
    """The runs of these cells, in cell then seed order, keyed for a `device_type` worker."""
    refs = []
    for i in cell_indices:
        cell = spec.cells[i]
        path = training_path(cell, device_type)
        for seed in range(cell.seed, cell.seed + cell.seeds):
            key = run_key(
                cell,
                seed,
                dtype=spec.dtype,
                path=path,
                record_every=spec.record_every,
                max_margin_baseline=spec.max_margin_baseline,
            )
            refs.append(RunRef(i, seed, key))
    return refs


def predicted_device(spec: JobSpec) -> str:
    """The device type a worker will most likely train the spec on: "cuda" when asked for,
    else a CPU (the queue of "auto" jobs is served by CPU workers)."""
    return "cuda" if spec.device == "cuda" else "cpu"


def served(
    run: Mapping[str, Any], cell: Cell, spec: JobSpec, source_job: str | None
) -> dict[str, Any]:
    """A stored run as a job receives it from the cache: `cached` true, `source_job` the job
    that trained it, `theory` under the asking job's constants."""
    return {**run, "theory": theory(cell, spec.theory), "cached": True, "source_job": source_job}


class RunStore(Protocol):
    """Where a cache keeps runs: read many by key, write one."""

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]: ...

    def put(self, key: str, run: dict[str, Any]) -> None: ...


# What a served run adds to the run as it was trained.
SERVED_FIELDS = ("cached", "source_job")


def stored(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run as a cache keeps it: as trained, without the fields serving adds."""
    return {k: v for k, v in run.items() if k not in SERVED_FIELDS}


def cacheable(run: Mapping[str, Any]) -> bool:
    """A cancelled run stopped early: its numbers are not the run's."""
    return run.get("stop_reason") != "cancelled"
