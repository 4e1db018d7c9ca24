"""One delivery of a batch: take what the run cache holds, train the rest, write the store.

A batch runs in rounds. Each round looks its open runs up in the run cache (hits are finished
runs at once), claims the misses no live batch is training (`jobmodel.runcache`), trains those,
and reports every cell whose runs are all in. Runs another live batch claimed are waited for:
the next round finds them cached, or takes them over once that batch's lease is gone. With the
cache off (BOLAB_CACHE_SCOPE=off) or `cache: false` in the spec, one round trains every run.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bo_engine.plan import Batch
from bo_engine.results import summary_rows
from bo_engine.runcache import RunRef, cacheable, run_refs, served
from bo_engine.spec import JobSpec
from jobmodel import events, logs
from jobmodel.runcache import Found, RunCache
from jobmodel.settings import Settings
from jobmodel.store import JobRecord, JobStore
from worker.lease import Lease

Slot = tuple[int, int]


class Throttle:
    """Lets a call through at most once per `interval` seconds (the first always passes)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True


class BatchRun:
    """The state of one batch delivery and the callbacks the engine reports through."""

    def __init__(
        self,
        jobs: JobStore,
        config: Settings,
        job: JobRecord,
        spec: JobSpec,
        batch: Batch,
        lease: Lease,
    ) -> None:
        self.jobs, self.config, self.job, self.spec = jobs, config, job, spec
        self.batch, self.lease = batch, lease
        self.holder = jobs.leases.key(job.id, str(batch.index))
        cache = RunCache.for_owner(jobs.redis, config, job.owner)
        self.cache = cache
        self.lookups = cache if spec.cache else None  # cache: false retrains every run
        self.runs_done = 0
        self.runs_cached = 0
        self.known: dict[Slot, dict[str, Any]] = {}
        self.trained: set[Slot] = set()  # by this delivery
        self.claimed: list[RunRef] = []
        self.key_of: dict[Slot, str] = {}
        self.progress_gate = Throttle(config.progress_interval_s)
        self.stopping = False
        self.started = time.perf_counter()

    # --- the rounds ---------------------------------------------------------------------

    def train(self, runner: Any, device: Any) -> None:
        """Every cell of the batch, reported to the store; raises runner.Cancelled on a stop."""
        refs = run_refs(self.spec, self.batch.cell_indices, device.type)
        self.key_of = {r.slot: r.key for r in refs}
        open_cells = list(self.batch.cell_indices)
        try:
            while open_cells:
                waiting = self._prepare([r for r in refs if r.cell_index in open_cells])
                done = runner.batch_cells(
                    self.spec,
                    replace(self.batch, cell_indices=tuple(open_cells)),
                    device=device,
                    known=self.known,
                    skip={r.slot for r in waiting},
                    source_job=self.job.id,
                    on_run_done=self.on_run_done,
                    on_runs_done=self.on_runs_done,
                    on_cell_done=self.on_cell_done,
                    should_cancel=self.should_cancel,
                    cancel_poll_seconds=self.config.cancel_poll_interval_s,
                )
                finished = {cell["index"] for cell in done}
                open_cells = [i for i in open_cells if i not in finished]
                if open_cells:
                    self._wait(runner)
        finally:
            if self.cache and self.claimed:
                self.cache.release(self.claimed, self.holder)

    def _prepare(self, refs: list[RunRef]) -> list[RunRef]:
        """Take the cached runs among `refs`, claim what is left; the runs to wait for."""
        pending = [r for r in refs if r.slot not in self.known]
        if self.lookups:
            self._take(pending, self.lookups.lookup(pending))
            pending = [r for r in pending if r.slot not in self.known]
        if not self.cache or not self.spec.cache:
            return []
        mine, waiting = self.cache.claim(pending, self.holder, self.config.batch_time_limit_s)
        self.claimed += mine
        return waiting

    def _take(self, refs: list[RunRef], found: dict[str, Found]) -> None:
        """Cached runs count as finished at once; this job's own (an earlier delivery of this
        batch) are its own runs, not cached ones."""
        cached = 0
        for ref in refs:
            if ref.key not in found:
                continue
            run, source = found[ref.key]
            if source == self.job.id:
                self.known[ref.slot] = run
            else:
                cell = self.spec.cells[ref.cell_index]
                self.known[ref.slot] = served(run, cell, self.spec, source)
                cached += 1
        taken = sum(r.key in found for r in refs)
        if taken:
            self.runs_cached += cached
            self.jobs.set_batch_cached(self.job.id, self.batch.index, self.runs_cached)
            self.jobs.count("runs_cached_total", {"queue": self.job.queue}, cached)
            self.on_runs_done(taken, force=True)

    def _wait(self, runner: Any) -> None:
        """Another live batch trains runs this one needs: look again shortly."""
        if self.should_cancel():
            raise runner.Cancelled(f"batch {self.batch.index} cancelled while waiting")
        time.sleep(self.config.cancel_poll_interval_s)

    # --- what the engine reports --------------------------------------------------------

    def on_run_done(self, slot: Slot, run: dict[str, Any]) -> None:
        self.known[slot] = run
        self.trained.add(slot)

    def on_runs_done(self, k: int, force: bool = False) -> None:
        self.runs_done += k
        if self.progress_gate.ready() or force:
            self.report_progress(self.runs_done)

    def report_progress(self, runs: int) -> None:
        job_id = self.job.id
        self.jobs.set_batch_progress(job_id, self.batch.index, runs)
        total = self.jobs.progress(job_id).runs_done  # over all batches of the job
        self.jobs.emit(job_id, events.PROGRESS, events.progress_data(total, self.job.runs_total))

    def on_cell_done(self, cell: dict[str, Any]) -> None:
        row = summary_rows([cell])[0]
        seconds = time.perf_counter() - self.started
        index = cell["index"]
        trained = [r for r in cell["runs"] if (index, r["seed"]) in self.trained]
        self.jobs.cell_done(self.job.id, self.job.queue, row, seconds, trained)
        # Last: the engine reports the runs' progress right after this callback, and a status
        # read in between should not see the cell with no runs done yet.
        self.jobs.put_cell(self.job.id, cell, row)
        if self.cache:  # the cell is stored: point the cache at the runs this batch has
            trained = [r for r in cell["runs"] if not r.get("cached") and cacheable(r)]
            slots = [(index, r["seed"]) for r in trained]
            run_keys = [self.key_of[slot] for slot in slots if slot in self.key_of]
            self.cache.remember(self.job.id, cell["index"], run_keys)

    def should_cancel(self) -> bool:
        """The engine asks at most every BOLAB_CANCEL_POLL_INTERVAL_S: the one throttle."""
        if self.lease.overdue.is_set():
            return True
        self.stopping = self.stopping or self.jobs.stop_requested(self.job.id)
        return self.stopping

    def log(self, event: str, **fields: Any) -> None:
        job, batch = self.job, self.batch.index
        logs.event(event, job_id=job.id, owner=job.owner, batch=batch, **fields)
