"""An adaptive job's rounds in the worker: plan a round from the stored cells, and run one of
its batches with each cell's new runs added to what the cell already holds.

Planning round k (task PLAN_JOB(job, k), unit `plan_unit(k)` under a lease) reads the cells
stored so far, asks the pure planner (`bo_engine.rounds.plan_next_round`) and stores the round
once (`JobStore.store_round`: a duplicate or late delivery stores nothing), then queues the
round's batches. The worker that finishes a round's last batch queues round k + 1. A plan with
no requests closes the job. Should a worker die at any step, the reaper finds the unit left
open (a planning step or a batch) and sends it again; every step is idempotent.
"""

from __future__ import annotations

from typing import Any

from bo_engine.adaptive import merged_cell, runs_bound
from bo_engine.rounds import RoundPlan, plan_next_round
from bo_engine.spec import JobSpec
from jobmodel.queue import RUN_BATCH
from jobmodel.store import JobRecord, JobStore
from worker.batch import BatchRun


def plan(jobs: JobStore, job: JobRecord, spec: JobSpec, round: int, send: Any) -> None:
    """Plan round `round` of an adaptive job, store it and queue its batches through
    `send(task, args, queue)`; a plan with nothing to train closes the job. Does nothing for a
    round already planned, one whose previous round is not done, or a stopped job (a cancel
    between rounds: no next round)."""
    if len(jobs.rounds(job.id)) != round or jobs.stop_requested(job.id):
        return
    first = job.batches_total or 0
    if len(jobs.done_batches(job.id)) < first:
        return  # the previous round still runs: its last batch queues this step again
    stored = jobs.cells(job.id)
    nxt = plan_next_round(spec, stored, round, first)
    event = {
        "round": round,
        "cells": len(nxt.requests),
        "runs": nxt.runs,
        "runs_done": sum(len(c["runs"]) for c in stored),
        "runs_bound": runs_bound(spec),
    }
    if not jobs.store_round(job.id, nxt.to_json(), first, event):
        return
    if not nxt.requests:
        jobs.close_if_done(job.id)
    for batch in nxt.batches:
        send(RUN_BATCH, [job.id, batch.index], job.queue)


def round_of(jobs: JobStore, job_id: str, batch_index: int) -> RoundPlan | None:
    """The stored round that batch `batch_index` belongs to."""
    for raw in jobs.rounds(job_id):
        found = RoundPlan.from_json(raw)
        if any(b.index == batch_index for b in found.batches):
            return found
    return None


class RoundBatchRun(BatchRun):
    """One batch of a round, its spec the round's (`bo_engine.rounds.round_spec`): trains the
    seeds the round asks of each cell (the run cache serves what it holds) and stores each cell
    with its earlier runs and the new ones."""

    def on_cell_done(self, cell: dict[str, Any]) -> None:
        index, view = cell["index"], self.spec
        stored = self.jobs.cell(self.job.id, index)
        point = view.points[index]  # type: ignore[attr-defined]
        merged = merged_cell(view.spec, stored, point, index, cell["runs"])  # type: ignore[attr-defined]
        super().on_cell_done(merged)
