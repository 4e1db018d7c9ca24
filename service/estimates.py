"""The cost estimate a dry run answers: the model, refitted from the workers' measured cells at
most every BOLAB_ESTIMATE_REFIT_S.

Refitting reads the capped history (`jobmodel.cost_history`) and fits `bo_engine.estimate`: the
steps model on the history and the cells the default was fitted on, the throughput on the
history alone (a device kind with no batch in it keeps the default's). When Redis cannot be
read the last model is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import redis

from bo_engine.estimate import (
    EstimateModel,
    JobEstimate,
    default_model,
    default_records,
    estimate,
    fit,
)
from bo_engine.spec import JobSpec
from jobmodel.settings import Settings
from jobmodel.store import JobStore

log = logging.getLogger(__name__)



class Estimator:
    """This API process's estimate model: the shipped default until the first refit."""

    def __init__(self, settings: Settings) -> None:
        self.refit_s = settings.estimate_refit_s
        self.parallel_runs = settings.max_parallel_runs
        self.default = default_model()
        self.prior = default_records()
        self._model = self.default
        self._next_fit = 0.0
        self._lock = threading.Lock()

    def model(self, store: JobStore) -> EstimateModel:
        """The current model, refitted first when the last fit is older than `refit_s`."""
        with self._lock:
            if time.monotonic() >= self._next_fit:
                self._next_fit = time.monotonic() + self.refit_s
                self._model = self._refit(store)
            return self._model

    def _refit(self, store: JobStore) -> EstimateModel:
        try:
            records = store.cost_history()
        except redis.RedisError as exc:
            log.warning("cost history unreadable, estimate model kept: %s", exc)
            return self._model
        return fit(records, self.parallel_runs, self.default, prior=self.prior)

    def estimate(
        self, spec: JobSpec, store: JobStore, cached_runs: Mapping[int, int]
    ) -> JobEstimate:
        """The estimate of `spec` with `cached_runs` (cell index -> runs the cache holds)."""
        return estimate(
            spec, self.model(store), parallel_runs=self.parallel_runs, cached_runs=cached_runs
        )
