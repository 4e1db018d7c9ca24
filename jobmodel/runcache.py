"""The lab's run cache in Redis: a pointer per run key to where the run is already stored.

A run is stored once, in the cells of the job that trained it (`bolab:job:{id}:cells`); the
cache adds one hash field per run, run key -> "job-id cell-index" (`keys.run_cache`). A lookup
follows the pointer and takes the run of that seed from the cell. Deleting a job (DELETE,
retention) drops the pointers to its runs (`forget_job`); a pointer whose cell is gone anyway
misses and is dropped at that lookup. No pointer keeps a run alive.

Two jobs that need the same run at the same time train it once: before training, a batch
claims the runs it will train (`keys.run_claim`, value = the lease key of that batch). A claim
is honoured only while that lease lives, so the claim of a killed worker lapses with its lease
(BOLAB_LEASE_TTL_S) and a waiting batch takes the run over; the claim itself expires after the
batch time limit at the latest.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis

from bo_engine.rounds import RoundPlan, SpecView, round_spec
from bo_engine.runcache import RunRef, predicted_device, run_refs
from bo_engine.spec import JobSpec
from jobmodel import keys
from jobmodel.settings import Settings

# Per run key: taken (1) when unclaimed, claimed by this holder or by a holder whose lease is
# gone; cached meanwhile (2) when the pointer exists; else held by a live batch (0).
# KEYS: the claim keys; ARGV: holder (its lease key), TTL s, pointer hash, the run keys.
_CLAIM = """
local out = {}
for i, claim in ipairs(KEYS) do
  if redis.call('HEXISTS', ARGV[3], ARGV[3 + i]) == 1 then
    out[i] = 2
  else
    local cur = redis.call('GET', claim)
    if (not cur) or cur == ARGV[1] or redis.call('EXISTS', cur) == 0 then
      redis.call('SET', claim, ARGV[1], 'EX', ARGV[2])
      out[i] = 1
    else
      out[i] = 0
    end
  end
end
return out
"""
# Delete the claims (KEYS) this holder (ARGV[1]) still has.
_RELEASE = """
for _, claim in ipairs(KEYS) do
  if redis.call('GET', claim) == ARGV[1] then redis.call('DEL', claim) end
end
return 0
"""
# Drop the pointers (fields ARGV[2..] of KEYS[1]) that name a cell of job ARGV[1].
_FORGET_JOB = """
local prefix = ARGV[1] .. ' '
for i = 2, #ARGV do
  local target = redis.call('HGET', KEYS[1], ARGV[i])
  if target and string.sub(target, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""
# Drop a pointer (field ARGV[1] of KEYS[1]) that still names what it named when read (ARGV[2]).
_FORGET = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

Found = tuple[dict[str, Any], str]  # a stored run and the id of the job that trained it


def scope_name(scope: str, owner: str) -> str | None:
    """The namespace a job's runs are shared in under BOLAB_CACHE_SCOPE; None when off."""
    if scope == "off":
        return None
    return "lab" if scope == "lab" else f"owner:{owner}"


class RunCache:
    """The pointers of one scope (the whole lab, or one owner)."""

    def __init__(self, client: redis.Redis, scope: str) -> None:
        self.redis = client
        self.scope = scope
        self.pointers = keys.run_cache(scope)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._forget = client.register_script(_FORGET)

    @classmethod
    def for_owner(cls, client: redis.Redis, settings: Settings, owner: str) -> RunCache | None:
        """The cache a job of `owner` shares, or None when BOLAB_CACHE_SCOPE is off."""
        name = scope_name(settings.cache_scope, owner)
        return cls(client, name) if name else None

    def lookup(self, refs: list[RunRef]) -> dict[str, Found]:
        """run key -> (run, source job) for each ref whose run is stored."""
        if not refs:
            return {}
        targets = self.redis.hmget(self.pointers, [r.key for r in refs])
        cells = self._cells({t for t in targets if t})
        found: dict[str, Found] = {}
        for ref, target in zip(refs, targets, strict=True):
            run = _run_of(cells.get(target), ref.seed) if target else None
            if run is not None:
                found[ref.key] = (run, target.split(" ")[0])
            elif target:
                self._forget(keys=[self.pointers], args=[ref.key, target])
        return found

    def _cells(self, targets: set[str]) -> dict[str, dict[str, Any] | None]:
        """ "job-id cell-index" -> that stored cell (None when the job or cell is gone)."""
        order = sorted(targets)
        pipe = self.redis.pipeline(transaction=False)
        for target in order:
            job_id, index = target.split(" ")
            pipe.hget(keys.cells(job_id), index)
        raw = pipe.execute()
        return {t: json.loads(text) if text else None for t, text in zip(order, raw, strict=True)}

    def remember(self, job_id: str, cell_index: int, run_keys: Iterable[str]) -> None:
        """The runs of these keys are stored in cell `cell_index` of job `job_id`."""
        target = f"{job_id} {cell_index}"
        mapping = dict.fromkeys(run_keys, target)
        if mapping:
            self.redis.hset(self.pointers, mapping=mapping)

    def claim(self, refs: list[RunRef], holder: str, ttl_s: float) -> tuple[list, list]:
        """(claimed by `holder` now: train them; held by a live batch or cached meanwhile:
        look again later)."""
        if not refs:
            return [], []
        claims = [keys.run_claim(self.scope, r.key) for r in refs]
        args = [holder, max(1, int(ttl_s)), self.pointers, *(r.key for r in refs)]
        taken = self._claim(keys=claims, args=args)
        mine = [r for r, t in zip(refs, taken, strict=True) if t == 1]
        return mine, [r for r, t in zip(refs, taken, strict=True) if t != 1]

    def release(self, refs: Iterable[RunRef], holder: str) -> None:
        claims = [keys.run_claim(self.scope, r.key) for r in refs]
        if claims:
            self._release(keys=claims, args=[holder])

    def cached_slots(self, spec: JobSpec) -> set[tuple[int, int]]:
        """(cell index, seed) of each run of `spec` stored in this cache, keyed for the device
        a worker will most likely use (`bo_engine.runcache.predicted_device`)."""
        if not spec.cache:
            return set()
        refs = run_refs(spec, range(len(spec.cells)), predicted_device(spec))
        if not refs:
            return set()
        targets = self.redis.hmget(self.pointers, [r.key for r in refs])
        named = sorted({t for t in targets if t})
        pipe = self.redis.pipeline(transaction=False)
        for target in named:
            job_id, index = target.split(" ")
            pipe.hexists(keys.cells(job_id), index)
        alive = dict(zip(named, pipe.execute(), strict=True))
        return {r.slot for r, t in zip(refs, targets, strict=True) if t and alive[t]}


def forget_job(
    client: redis.Redis,
    job_id: str,
    spec: dict[str, Any],
    owner: str,
    rounds: Iterable[dict[str, Any]] = (),
) -> None:
    """Drop the pointers to the runs of a deleted job, in both scopes it may have filled and
    for both kinds of device it may have trained on (else they would wait for a lookup): the
    runs of its spec's cells and, for an adaptive job, those of every stored round plan."""
    try:
        parsed = JobSpec.model_validate(spec)
    except ValueError:  # a spec this version no longer reads: its keys cannot be rebuilt
        return
    views: list[tuple[JobSpec | SpecView, Iterable[int]]] = [(parsed, range(len(parsed.cells)))]
    for plan in rounds:
        requests = RoundPlan.from_json(plan).requests
        views.append((round_spec(parsed, requests), [r.index for r in requests]))
    run_keys = {
        ref.key
        for view, indices in views
        for device in ("cpu", "cuda")
        for ref in run_refs(view, indices, device)
    }
    script = client.register_script(_FORGET_JOB)
    for scope in ("lab", f"owner:{owner}"):
        script(keys=[keys.run_cache(scope)], args=[job_id, *sorted(run_keys)])


def cached_slots(
    client: redis.Redis, spec: JobSpec, owner: str, settings: Settings
) -> set[tuple[int, int]]:
    """(cell index, seed) of each run of `spec` that a job of `owner` would take from the
    cache, not train (none when BOLAB_CACHE_SCOPE is off or the spec says `cache: false`)."""
    cache = RunCache.for_owner(client, settings, owner)
    return cache.cached_slots(spec) if cache else set()


def count_cached(client: redis.Redis, spec: JobSpec, owner: str, settings: Settings) -> int:
    """How many runs of `spec` a job of `owner` would take from the cache: a dry run's
    `runs_cached`."""
    return len(cached_slots(client, spec, owner, settings))


def cached_per_cell(
    client: redis.Redis, spec: JobSpec, owner: str, settings: Settings
) -> dict[int, int]:
    """Cell index -> runs of it the cache holds (what admission does not charge)."""
    return dict(Counter(i for i, _ in cached_slots(client, spec, owner, settings)))


def _run_of(cell: dict[str, Any] | None, seed: int) -> dict[str, Any] | None:
    for run in (cell or {}).get("runs", ()):
        if run.get("seed") == seed and not run.get("cached"):
            return run
    return None
