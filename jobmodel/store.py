"""The job store: job records, progress and results in Redis (see `jobmodel.keys` for the layout).

Workers write it as batches run; the API reads it. Results live here, not in Celery's result
backend (which expires). Status changes go through one Lua script so that two processes can
never both move a job, and a terminal status (succeeded, failed, cancelled) is never left.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Required, TypedDict, Unpack

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from bo_engine.rounds import RoundPlan, round_entry
from bo_engine.spec import JobSpec
from jobmodel import cost_history, counters, events, keys, logs, queue, runcache
from jobmodel.leases import Leases
from jobmodel.queue import JobQueue
from jobmodel.settings import Settings

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = (JobStatus.queued, JobStatus.running)
TERMINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)

# Atomically: if the job's status is one of ARGV[3..], move it to ARGV[2] and set the extra
# fields (ARGV[k+1] = number of field/value arguments that follow). Keeps the per-status
# index sets in step. Returns 1 on a move, 0 when the job is missing or in another status.
# (The status-set keys are built in the script: fine on one Redis, not on a Redis Cluster.)
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
local id, to, nallowed = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ok = false
for i = 4, 3 + nallowed do
  if ARGV[i] == cur then ok = true end
end
if not ok then return 0 end
redis.call('ZREM', KEYS[2] .. ':' .. cur, id)
redis.call('ZADD', KEYS[2] .. ':' .. to, 0, id)
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' then
  redis.call('ZREM', KEYS[2] .. ':owner:' .. owner .. ':' .. cur, id)
  redis.call('ZADD', KEYS[2] .. ':owner:' .. owner .. ':' .. to, 0, id)
end
redis.call('HSET', KEYS[1], 'status', to)
for i = 4 + nallowed, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

# Atomically create a job: replay the job an idempotency key already names (KEYS[3], "" for
# none), else refuse when the owner has ARGV[3] (> 0) or more active jobs, else write the record,
# its indexes and the idempotency key, count it (KEYS[4], field ARGV[6]), write its first event
# (stream KEYS[5], at most about ARGV[8] long; data ARGV[7]) and, with a list KEYS[6], queue its
# first task there (message ARGV[9]) and publish the task's "sent" event (ARGV[11] on channel
# ARGV[10]). One call, one round trip: a job is stored and queued, or neither.
# Each call has a new job id: a record that exists already means this very call ran before (a
# retry after a lost answer), and it answers as it did then without writing or queueing again.
# ARGV: id, owner, cap, body hash, key TTL, counter field, event data, stream bound, task
# message, its event channel, its event, then the record's field/values.
_CREATE = """
local id, owner, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then return {'created', id} end
if KEYS[3] ~= '' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {'replay', prev} end
end
local mine = KEYS[2] .. ':owner:' .. owner
if cap > 0 then
  local active = redis.call('ZCARD', mine .. ':queued') + redis.call('ZCARD', mine .. ':running')
  if active >= cap then return {'full', tostring(active)} end
end
for i = 12, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZADD', KEYS[2], 0, id)
redis.call('ZADD', KEYS[2] .. ':queued', 0, id)
redis.call('ZADD', mine, 0, id)
redis.call('ZADD', mine .. ':queued', 0, id)
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4] .. ' ' .. id, 'EX', tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'idempotency_key', KEYS[3])
end
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'event', 'status', 'data', ARGV[7])
if KEYS[6] ~= '' then
  redis.call('LPUSH', KEYS[6], ARGV[9])
  redis.call('PUBLISH', ARGV[10], ARGV[11])
end
return {'created', id}
"""

# Atomically delete a terminal job: its record, every per-job key (KEYS[5..]), its entries in
# the index sets (KEYS[2] and the per-status and per-owner sets built from it), its entries
# in every outbox (KEYS[3..OUTBOX_END]: due set, attempts hash, per outbox; see
# keys.OUTBOXES) and the idempotency key that still names it. Refuses an
# active job ('active') and one whose plan or batch lease (or an adaptive job's planning of its
# last round or the next) is live ('busy': a worker is still stopping it and would write its
# keys again). UNLINK: Redis frees a big job's memory in a
# background thread, so the script does not stall other clients. ARGV: id, lease key prefix,
# number of active statuses, the active statuses, then the terminal ones.
_DELETE = """
local id, lease, nactive = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rec = redis.call('HMGET', KEYS[1], 'status', 'owner', 'batches_total', 'idempotency_key',
                      'round')
local status, owner = rec[1], rec[2] or ''
if not status then return 'missing' end
for i = 4, 3 + nactive do
  if ARGV[i] == status then return 'active' end
end
if redis.call('EXISTS', lease .. 'plan') == 1 then return 'busy' end
local round = tonumber(rec[5])
if round and (redis.call('EXISTS', lease .. 'plan:' .. round) == 1
              or redis.call('EXISTS', lease .. 'plan:' .. (round + 1)) == 1) then
  return 'busy'
end
for b = 0, (tonumber(rec[3]) or 0) - 1 do
  if redis.call('EXISTS', lease .. b) == 1 then return 'busy' end
end
redis.call('UNLINK', KEYS[1], unpack(KEYS, OUTBOX_END + 1))
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[2] .. ':owner:' .. owner, id)
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[2] .. ':' .. ARGV[i], id)
  redis.call('ZREM', KEYS[2] .. ':owner:' .. owner .. ':' .. ARGV[i], id)
end
for i = 3, OUTBOX_END, 2 do
  redis.call('ZREM', KEYS[i], id)
  redis.call('HDEL', KEYS[i + 1], id)
end
local idem = rec[4]
if idem and idem ~= '' then
  local named = redis.call('GET', idem)
  if named and string.sub(named, -(#id + 1)) == ' ' .. id then redis.call('DEL', idem) end
end
return 'deleted'
""".replace("OUTBOX_END", str(2 + 2 * len(keys.OUTBOXES)))


# Store round ARGV[1] of an adaptive job (plan JSON ARGV[2]) once, in turn: only while the
# record (KEYS[1]) exists, the round is not stored yet, every earlier one is (HLEN of KEYS[2]
# = ARGV[1]) and the job has ARGV[3] batches so far. Its batches then number up to ARGV[4];
# ARGV[5] = '1' says the planner was done (no requests). Writes its `round` event (stream
# KEYS[3], data ARGV[6], about ARGV[7] long). Returns 1 when stored, 0 for a duplicate.
_STORE_ROUND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[1]) then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'batches_total') or '0') ~= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'round', ARGV[1], 'batches_total', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'rounds_done', '1') end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'event', 'round', 'data', ARGV[6])
return 1
"""


class Deletion(StrEnum):
    """What `JobStore.delete` did: deleted, or why not."""

    deleted = "deleted"
    missing = "missing"
    active = "active"  # queued or running: cancel it first
    busy = "busy"  # terminal, but a worker still holds a lease on it (stopping): retry shortly


class QuotaFull(Exception):
    """The owner already has `active` queued or running jobs, the most allowed."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} active jobs")
        self.active = active


class IdempotentReplay(Exception):
    """The idempotency key was used before, for job `job_id` (with the same body or not)."""

    def __init__(self, job_id: str, same_body: bool) -> None:
        super().__init__(job_id)
        self.job_id, self.same_body = job_id, same_body


# What `new_job_id` makes: anything else names no job (and must never reach a Redis key name).
JOB_ID_PATTERN = r"^[0-9a-f]{20}$"


def new_job_id() -> str:
    """Fixed-width hex: 12 digits of milliseconds, then 8 random; sorts by creation time."""
    return f"{time_prefix(time.time())}{secrets.token_hex(4)}"


def time_prefix(at: float) -> str:
    """The leading digits of the ids of jobs created at unix time `at`."""
    return f"{int(at * 1000):012x}"


@dataclass
class JobRecord:
    id: str
    status: JobStatus
    spec: dict[str, Any]
    queue: str
    runs_total: int
    cells_total: int
    created_at: float
    owner: str = ""  # the API key's owner; "" = nobody in particular
    batches_total: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    engine: dict[str, Any] | None = None
    # Its MLflow export: "pending", "exported" or "failed after N: why"; the parent run's id.
    mlflow_export: str | None = None
    mlflow_run_id: str | None = None
    # An adaptive job (cells planned round by round): the last round planned (None before
    # the first), and whether the planner said it was done.
    adaptive: bool = False
    round: int | None = None
    rounds_done: bool = False

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> JobRecord:
        def num(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            id=raw["id"],
            status=JobStatus(raw["status"]),
            spec=json.loads(raw["spec"]),
            queue=raw.get("queue", "cpu"),
            runs_total=int(raw["runs_total"]),
            cells_total=int(raw["cells_total"]),
            created_at=float(raw["created_at"]),
            owner=raw.get("owner", ""),
            batches_total=int(raw["batches_total"]) if raw.get("batches_total") else None,
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            error=raw.get("error") or None,
            engine=json.loads(raw["engine"]) if raw.get("engine") else None,
            mlflow_export=raw.get("mlflow_export") or None,
            mlflow_run_id=raw.get("mlflow_run_id") or None,
            adaptive=raw.get("adaptive") == "1",
            round=int(raw["round"]) if raw.get("round") else None,
            rounds_done=raw.get("rounds_done") == "1",
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Progress:
    runs_done: int
    batches_done: int
    runs_cached: int = 0  # of runs_done, those taken from the run cache


@dataclass(frozen=True)
class LabState:
    """The lab at one moment, for gauges: jobs by status, tasks waiting and live workers per
    queue, and Redis's memory use against its limit (0 = none)."""

    jobs: dict[JobStatus, int]
    queue_depth: dict[str, int]
    workers: dict[str, int]
    memory_used: int
    memory_max: int


# Retries with backoff (about 2.5 s in all) ride out a Redis restart: the first call after it
# meets a dead pooled connection and must reconnect, not fail. The sync store and the API's
# async submits (`jobmodel.live`) use the same policy.
RESTART_RETRIES = 6
RESTART_OPTIONS: dict[str, Any] = {
    "health_check_interval": 30,
    "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
}


def restart_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


class NewJob(TypedDict, total=False):
    """A new job besides its spec: `JobStore.create`'s parameters (it says what each means)."""

    runs_total: Required[int]
    cells_total: Required[int]
    queue: Required[str]
    owner: str
    max_active: int
    idempotency: tuple[str, str, int] | None
    notify_url: str | None
    job_queue: JobQueue | None
    adaptive: bool


@dataclass(frozen=True)
class Creation:
    """One call of the create script (`_CREATE`), ready to send: the new record, the script's
    keys and arguments. `outcome` reads its answer. The sync store (`JobStore.create`) and
    the API's event loop (`jobmodel.live.LiveView.create`) send the same call."""

    SCRIPT: ClassVar[str] = _CREATE

    job: JobRecord
    keys: list[str]
    args: list[Any]
    body_hash: str

    @classmethod
    def prepare(cls, spec: dict[str, Any], **new: Unpack[NewJob]) -> Creation:
        """The call that creates a job (`JobStore.create` says what each parameter means)."""
        queue, owner = new["queue"], new.get("owner", "")
        idempotency, job_queue = new.get("idempotency"), new.get("job_queue")
        job = JobRecord(
            id=new_job_id(),
            status=JobStatus.queued,
            spec=spec,
            queue=queue,
            runs_total=new["runs_total"],
            cells_total=new["cells_total"],
            created_at=time.time(),
            owner=owner,
            adaptive=new.get("adaptive", False),
        )
        key_hash, body_hash, ttl = idempotency or ("", "", 0)
        idem_key = keys.idempotency(owner, key_hash) if idempotency else ""
        task = job_queue.plan_job(job.id, queue) if job_queue else None
        script_keys = [keys.job(job.id), keys.JOBS, idem_key, keys.METRIC_COUNTERS]
        script_keys += [keys.events(job.id), task.queue if task else ""]
        args: list[Any] = [job.id, owner, new.get("max_active", 0), body_hash, ttl]
        args += [counters.field("jobs_submitted_total", {"queue": queue})]
        args += [events.encode({"status": job.status.value}), events.MAX_EVENTS]
        args += [task.message, task.event_channel, task.event] if task else ["", "", ""]
        for name, value in _record_fields(job, new.get("notify_url")).items():
            args += [name, value]
        return cls(job, script_keys, args, body_hash)

    def outcome(self, answer: list[str]) -> JobRecord:
        """The job the script stored, or IdempotentReplay / QuotaFull for its refusals."""
        outcome, value = answer
        if outcome == "replay":
            previous_hash, _, job_id = value.partition(" ")
            raise IdempotentReplay(job_id, previous_hash == self.body_hash)
        if outcome == "full":
            raise QuotaFull(int(value))
        job = self.job
        logs.event(
            "job.submitted", job_id=job.id, owner=job.owner, queue=job.queue, runs=job.runs_total
        )
        return job


class JobStore:
    """`export_to_mlflow`: a job that succeeds is queued for its MLflow export (the processes
    that end jobs get it from their settings; see `events.job_ended`)."""

    def __init__(self, client: redis.Redis, *, export_to_mlflow: bool = False) -> None:
        self.redis = client
        self.export_to_mlflow = export_to_mlflow
        self._transition = client.register_script(_TRANSITION)
        self._create = client.register_script(Creation.SCRIPT)
        self._delete = client.register_script(_DELETE)
        self._annotate = client.register_script(events.SET_IF_EXISTS)
        self._store_round = client.register_script(_STORE_ROUND)
        self.leases = Leases(client)

    @classmethod
    def from_url(cls, url: str, *, export_to_mlflow: bool = False) -> JobStore:
        return cls(
            redis.Redis.from_url(
                url,
                decode_responses=True,
                retry=Retry(restart_backoff(), RESTART_RETRIES),
                **RESTART_OPTIONS,
            ),
            export_to_mlflow=export_to_mlflow,
        )

    def close(self) -> None:
        self.redis.close()

    # --- records -------------------------------------------------------------------------

    def create(self, spec: dict[str, Any], **new: Unpack[NewJob]) -> JobRecord:
        """Store a new queued job. `max_active` > 0 caps the owner's queued+running jobs
        (QuotaFull); `idempotency` = (sha256 of the key, body hash, TTL s) replays an earlier
        submission (IdempotentReplay); `notify_url` is where its webhook goes when it ends;
        with `job_queue`, the job's first task is queued on `queue` in the same step (without,
        nothing runs it). `adaptive`: its cells are planned round by round (`runs_total` is
        then its budget). Check and writes are one Lua call: concurrent submits cannot race,
        and a job is never stored without its task, nor its task queued without the job."""
        creation = Creation.prepare(spec, **new)
        return creation.outcome(self._create(keys=creation.keys, args=creation.args))

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None

    def spec_json(self, job_id: str) -> str | None:
        return self.redis.hget(keys.job(job_id), "spec")

    def list(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; `cursor` is the last id of the previous page (exclusive). With `owner`:
        only that owner's jobs."""
        if owner is None:
            index = keys.jobs_in(status) if status else keys.JOBS
        else:
            index = keys.owner_jobs(owner, status)
        top = f"({cursor}" if cursor else "+"
        ids = self.redis.zrevrangebylex(index, top, "-", start=0, num=limit + 1)
        page, more = ids[:limit], len(ids) > limit
        pipe = self.redis.pipeline(transaction=False)
        for job_id in page:
            pipe.hgetall(keys.job(job_id))
        records = [JobRecord.from_hash(raw) for raw in pipe.execute() if raw]
        return records, (page[-1] if more and page else None)

    def transition(
        self, job_id: str, to: JobStatus, allowed_from: tuple[JobStatus, ...], **fields: Any
    ) -> bool:
        args: list[Any] = [job_id, to.value, len(allowed_from), *(s.value for s in allowed_from)]
        for name, value in fields.items():
            args += [name, value if isinstance(value, str) else json.dumps(value)]
        moved = bool(self._transition(keys=[keys.job(job_id), keys.JOBS], args=args))
        if moved and to in TERMINAL:
            # Once per job: only one process wins the move to a terminal status. The move
            # stands even if this bookkeeping fails; the SSE route then ends from the record.
            try:
                events.job_ended(self.redis, job_id, export_to_mlflow=self.export_to_mlflow)
            except redis.RedisError:
                log.warning("job %s ended but its end event was not written", job_id)
        return moved

    def mark_running(self, job_id: str) -> bool:
        return self.transition(
            job_id, JobStatus.running, (JobStatus.queued,), started_at=repr(time.time())
        )

    def mark_failed(self, job_id: str, error: str) -> bool:
        return self.transition(
            job_id, JobStatus.failed, ACTIVE, error=error, finished_at=repr(time.time())
        )

    def mark_succeeded(self, job_id: str, engine: dict[str, Any]) -> bool:
        return self.transition(
            job_id, JobStatus.succeeded, ACTIVE, engine=engine, finished_at=repr(time.time())
        )

    def annotate(self, job_id: str, field: str, value: str, **more: str) -> bool:
        """Set fields of an existing record; False (and nothing written) when it is gone."""
        args = [field, value, *(item for pair in more.items() for item in pair)]
        return bool(self._annotate(keys=[keys.job(job_id)], args=args))

    def active_ids(self) -> list[str]:
        """Every queued or running job."""
        return [i for status in ACTIVE for i in self.redis.zrange(keys.jobs_in(status), 0, -1)]

    def set_batches_total(self, job_id: str, total: int) -> None:
        self.redis.hset(keys.job(job_id), "batches_total", total)

    # --- deletion -------------------------------------------------------------------------

    def delete(self, job_id: str) -> Deletion:
        """Remove a terminal job and everything stored for it, in one step (see `_DELETE`).
        The idempotency key that created it goes too: the same key then submits a new job."""
        per_job = [
            keys.cells(job_id),
            keys.summaries(job_id),
            keys.progress(job_id),
            keys.batches(job_id),
            keys.cancel(job_id),
            keys.attempts(job_id),
            keys.events(job_id),
            keys.cached(job_id),
            keys.rounds(job_id),
        ]
        args = [job_id, keys.lease(job_id, ""), len(ACTIVE), *ACTIVE, *TERMINAL]
        spec, owner, adaptive = self.redis.hmget(keys.job(job_id), "spec", "owner", "adaptive")
        # An adaptive job's cells beyond its spec's are in its round plans, deleted with it.
        rounds = self.rounds(job_id) if adaptive == "1" else []
        outcome = Deletion(
            self._delete(
                keys=[keys.job(job_id), keys.JOBS, *itertools.chain(*keys.OUTBOXES), *per_job],
                args=args,
            )
        )
        if outcome == Deletion.deleted:
            logs.event("job.deleted", job_id=job_id)
            if spec:  # the run cache no longer points at its runs
                runcache.forget_job(self.redis, job_id, json.loads(spec), owner or "", rounds)
        return outcome

    def finished_before(self, cutoff: float, limit: int = 100) -> list[str]:
        """Up to `limit` terminal jobs that finished before unix time `cutoff`, oldest first.
        Ids begin with their creation time and a job finishes after it is created, so only
        the oldest ids created before the cutoff are read (10 `limit` per status at most)."""
        found: list[str] = []
        for status in TERMINAL:
            index, top = keys.jobs_in(status), f"({time_prefix(cutoff)}"
            found += self.redis.zrangebylex(index, "-", top, start=0, num=10 * limit)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in found:
            pipe.hget(keys.job(job_id), "finished_at")
        done = [
            job_id
            for job_id, finished in zip(found, pipe.execute(), strict=True)
            if finished and float(finished) < cutoff
        ]
        return sorted(done)[:limit]

    # --- cancellation --------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Raise the flag the training loop polls, then mark the job cancelled if active."""
        self.redis.set(keys.cancel(job_id), "1")
        return self.transition(job_id, JobStatus.cancelled, ACTIVE, finished_at=repr(time.time()))

    def stop_requested(self, job_id: str) -> bool:
        """True when the job was cancelled or failed elsewhere: its batches should stop."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(keys.cancel(job_id))
        pipe.hget(keys.job(job_id), "status")
        flagged, status = pipe.execute()
        return bool(flagged) or status in (JobStatus.cancelled, JobStatus.failed, None)

    # --- progress and results, written by workers -----------------------------------------

    def set_batch_progress(self, job_id: str, batch: int, runs_done: int) -> None:
        self.redis.hset(keys.progress(job_id), str(batch), runs_done)

    def set_batch_cached(self, job_id: str, batch: int, runs_cached: int) -> None:
        """Of the batch's runs, how many it took from the run cache (idempotent per batch)."""
        self.redis.hset(keys.cached(job_id), str(batch), runs_cached)

    def cached_per_cell(self, spec: JobSpec, owner: str, settings: Settings) -> dict[int, int]:
        """Cell index -> runs of `spec` that a job of `owner` would take from the run cache."""
        return runcache.cached_per_cell(self.redis, spec, owner, settings)

    def owners(self, job_ids: list[str]) -> dict[str, str | None]:
        """job id -> its owner, None for a job that is gone."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), "id", "owner")
        found = pipe.execute()
        return {j: (o or "") if i else None for j, (i, o) in zip(job_ids, found, strict=True)}

    def put_cell(self, job_id: str, cell: dict[str, Any], summary: dict[str, Any]) -> None:
        index = str(cell["index"])
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.cells(job_id), index, json.dumps(cell, separators=(",", ":")))
        pipe.hset(keys.summaries(job_id), index, json.dumps(summary, separators=(",", ":")))
        pipe.execute()

    def batch_done(self, job_id: str, batch: int) -> bool:
        return bool(self.redis.hexists(keys.batches(job_id), str(batch)))

    def finish_batch(
        self,
        job_id: str,
        batch: int,
        runs: int,
        wall_seconds: float,
        engine: dict[str, Any] | None = None,
    ) -> bool:
        """Record a finished batch; True when it was the last one the job was waiting for.
        `engine` (the engine facts of this batch's run) is kept with it so that any process,
        torch or not, can close the job from the store alone (`close_if_done`)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.progress(job_id), str(batch), runs)
        pipe.hset(keys.batches(job_id), str(batch), repr(wall_seconds))
        if engine is not None:
            # In the same transaction: a batch recorded done always has its engine facts.
            pipe.hset(keys.job(job_id), "batch_engine", json.dumps(engine, separators=(",", ":")))
        pipe.hlen(keys.batches(job_id))
        pipe.hget(keys.job(job_id), "batches_total")
        *_, done, total = pipe.execute()
        return total is not None and done >= int(total)

    def close_if_done(self, job_id: str) -> bool:
        """Mark an active job succeeded if every one of its batches is recorded done; True when
        this call closed it. The worker of the last batch calls it, and so do a redelivered
        batch and the reaper: that worker can die (or lose Redis) between `finish_batch` and
        this call, and then nothing else is left to run that would close the job. An adaptive
        job closes only once its planner said it was done (`store_round`)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hmget(
            keys.job(job_id), "status", "batches_total", "batch_engine", "adaptive", "rounds_done"
        )
        pipe.hvals(keys.batches(job_id))
        (status, total, engine, adaptive, rounds_done), walls = pipe.execute()
        if status not in ACTIVE or total is None or len(walls) < int(total):
            return False
        if adaptive == "1" and rounds_done != "1":
            return False  # an adaptive job is done when its planner says so, not before
        # Compute time of the whole job, over the facts of the batch that finished last. The
        # transition is one-way: of concurrent callers, one closes the job and writes its end.
        facts = json.loads(engine) if engine else {}
        facts["wall_seconds"] = sum(float(w) for w in walls)
        return self.mark_succeeded(job_id, facts)

    # --- an adaptive job's rounds ----------------------------------------------------------

    def store_round(
        self, job_id: str, plan: dict[str, Any], batches_before: int, event: dict[str, Any]
    ) -> bool:
        """Store round `plan["round"]` (its requests and batches, `bo_engine.rounds.RoundPlan`)
        and its `round` event, once and in turn; False for a duplicate (that round is stored,
        or an earlier one is not) or a job that is gone. A plan without requests says the job
        is done: `close_if_done` then closes it."""
        round_, batches = plan["round"], len(plan["batches"])
        args = [round_, json.dumps(plan, separators=(",", ":")), batches_before]
        args += [batches_before + batches, "0" if plan["requests"] else "1"]
        args += [events.encode(event), events.MAX_EVENTS]
        script_keys = [keys.job(job_id), keys.rounds(job_id), keys.events(job_id)]
        return bool(self._store_round(keys=script_keys, args=args))

    def rounds(self, job_id: str) -> list[dict[str, Any]]:
        """The job's stored round plans, in round order."""
        return _by_index(self.redis.hgetall(keys.rounds(job_id)))

    def round_entries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's rounds as its result lists them (`bo_engine.rounds.round_entry`; wall
        seconds: the sum of the round's batches'); [] for a job without rounds."""
        walls = self.batch_walls(job_id)
        plans = [RoundPlan.from_json(raw) for raw in self.rounds(job_id)]
        return [
            round_entry(p, sum(walls.get(b.index, 0.0) for b in p.batches))
            for p in plans
            if p.requests
        ]

    def cell(self, job_id: str, index: int) -> dict[str, Any] | None:
        raw = self.redis.hget(keys.cells(job_id), str(index))
        return json.loads(raw) if raw else None

    def batch_walls(self, job_id: str) -> dict[int, float]:
        """Batch index -> wall seconds, of each batch done."""
        return {int(b): float(w) for b, w in self.redis.hgetall(keys.batches(job_id)).items()}

    def done_batches(self, job_id: str) -> set[int]:
        return {int(b) for b in self.redis.hkeys(keys.batches(job_id))}

    def progress_many(self, job_ids: list[str]) -> list[Progress]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hvals(keys.progress(job_id))
            pipe.hlen(keys.batches(job_id))
            pipe.hvals(keys.cached(job_id))
        out = pipe.execute()
        return [
            Progress(
                runs_done=sum(int(r) for r in runs),
                batches_done=batches,
                runs_cached=sum(int(c) for c in cached),
            )
            for runs, batches, cached in zip(out[::3], out[1::3], out[2::3], strict=True)
        ]

    def progress(self, job_id: str) -> Progress:
        return self.progress_many([job_id])[0]

    def cells(self, job_id: str) -> list[dict[str, Any]]:
        return _by_index(self.redis.hgetall(keys.cells(job_id)))

    def summaries(self, job_id: str) -> list[dict[str, Any]]:
        return _by_index(self.redis.hgetall(keys.summaries(job_id)))

    def has_cells(self, job_id: str) -> bool:
        return bool(self.redis.hlen(keys.cells(job_id)))

    def emit(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        """One event on the job's stream (see `jobmodel.events`)."""
        events.emit(self.redis, job_id, kind, data)

    def cell_done(
        self,
        job_id: str,
        queue: str,
        row: dict[str, Any],
        seconds: float,
        trained: list[dict[str, Any]],
    ) -> None:
        """A cell finished: its `cell` event (summary `row`), the runs of it this delivery
        `trained` (not those taken from the run cache or an earlier delivery) with their GD steps
        in the training metrics, and their measured cost in the history the estimate learns
        from. Runs of a batch train together as one tensor program, so a run's duration is the
        `seconds` from its batch's start until its cell finished."""
        runs = trained
        steps = sum(int(run.get("steps", 0)) for run in runs)
        pipe = self.redis.pipeline(transaction=False)
        events.emit(pipe, job_id, events.CELL, row)
        counters.inc(pipe, "runs_trained_total", {"queue": queue}, len(runs))
        counters.inc(pipe, "gd_steps_total", {"queue": queue}, steps)
        if runs:
            counters.observe(pipe, "run_duration_seconds", {"queue": queue}, seconds, len(runs))
            cost_history.record(pipe, job_id, queue, {"params": row, "runs": runs}, seconds)
        pipe.execute()

    def cost_history(self) -> list[dict[str, Any]]:
        """The measured cost of recently trained cells, oldest first (`jobmodel.cost_history`)."""
        return cost_history.read(self.redis)

    def count(self, name: str, labels: counters.Labels, amount: float = 1) -> None:
        counters.inc(self.redis, name, labels, amount)

    # --- workers -------------------------------------------------------------------------

    def heartbeat(self, name: str, queues: list[str], ttl_s: float) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(keys.WORKERS, {name: now})
        pipe.hset(
            keys.worker(name),
            mapping={"queues": ",".join(queues), "pid": os.getpid(), "seen": repr(now)},
        )
        pipe.expire(keys.worker(name), max(1, int(ttl_s)))
        pipe.execute()

    def worker_gone(self, name: str) -> None:
        self.redis.zrem(keys.WORKERS, name)
        self.redis.delete(keys.worker(name))

    def lab_state(self, worker_ttl_s: float) -> LabState:
        pipe = self.redis.pipeline(transaction=False)
        for status in JobStatus:
            pipe.zcard(keys.jobs_in(status.value))
        lists = queue.broker_lists()
        for name in lists:
            pipe.llen(name)
        pipe.zrangebyscore(keys.WORKERS, time.time() - worker_ttl_s, "+inf")
        *counts, names = pipe.execute()
        depth = dict.fromkeys(queue.QUEUES, 0)
        for name, n in zip(lists, counts[len(JobStatus) :], strict=True):
            depth[name.split(queue.PRIORITY_SEP)[0]] += n
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.worker(name), "queues")
        workers = dict.fromkeys(queue.QUEUES, 0)
        for served in pipe.execute():
            for name in (served or "").split(","):
                if name in workers:
                    workers[name] += 1
        memory = self.redis.info("memory")
        return LabState(
            jobs=dict(zip(JobStatus, counts, strict=False)),
            queue_depth=depth,
            workers=workers,
            memory_used=int(memory["used_memory"]),
            memory_max=int(memory.get("maxmemory", 0)),
        )

    def counters(self) -> dict[str, dict[str, float]]:
        return counters.counters(self.redis)

    def histogram(self, name: str) -> dict[str, dict[str, float]]:
        return counters.histogram(self.redis, name)

    def live_workers(self, ttl_s: float) -> list[str]:
        now = time.time()
        self.redis.zremrangebyscore(keys.WORKERS, "-inf", now - ttl_s)
        return list(self.redis.zrangebyscore(keys.WORKERS, now - ttl_s, "+inf"))


def _record_fields(job: JobRecord, notify_url: str | None) -> dict[str, Any]:
    """The hash fields of a new job's record."""
    fields: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "spec": json.dumps(job.spec, separators=(",", ":")),
        "queue": job.queue,
        "runs_total": job.runs_total,
        "cells_total": job.cells_total,
        "created_at": repr(job.created_at),
        "owner": job.owner,
    }
    if notify_url is not None:
        fields["notify_url"] = notify_url
    if job.adaptive:
        fields["adaptive"] = "1"
    return fields


def _by_index(raw: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(raw[k]) for k in sorted(raw, key=int)]
