"""Helpers shared by the engine suites: train runs on the CPU, pick the training path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

import bo_engine.train as train_mod
from bo_engine.data import TrainSet
from bo_engine.data import make_train_set as explicit_train_set
from bo_engine.model import init_weights as explicit_init
from bo_engine.spec import TheoryRule
from bo_engine.train import RunSetup, train_batch


def force_batched_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train on the CPU as one batched tensor program (what a GPU does), not in compiled loops."""
    monkeypatch.setattr(train_mod, "_uses_compiled_loop", lambda device, cell: False)


def train_runs(
    setups: list[RunSetup],
    *,
    dtype: torch.dtype = torch.float64,
    record_every: int | None = None,
    max_margin_baseline: bool = False,
    should_cancel: Callable[[], bool] | None = None,
    on_run_done: Callable[[RunSetup, dict[str, Any]], None] | None = None,
) -> tuple[list[tuple[RunSetup, dict[str, Any]]], bool]:
    """`train_batch` on the CPU: the (setup, result) pairs in the order they were reported (unless
    `on_run_done` takes them), and whether the batch was cancelled."""
    finished: list[tuple[RunSetup, dict[str, Any]]] = []
    cancelled = train_batch(
        setups,
        device=torch.device("cpu"),
        dtype=dtype,
        record_every=record_every,
        max_margin_baseline=max_margin_baseline,
        theory=TheoryRule(),
        on_run_done=on_run_done or (lambda setup, result: finished.append((setup, result))),
        should_cancel=should_cancel,
    )
    return finished, cancelled


def capture_results(
    monkeypatch: pytest.MonkeyPatch,
) -> dict[int, tuple[torch.Tensor, TrainSet, dict[str, Any]]]:
    """Per seed, what `train_batch` hands to the result path: W = W(0) + C X formed explicitly
    (from the same draw as the run's products), the explicit training set, and the result."""
    seen: dict[int, tuple[torch.Tensor, TrainSet, dict[str, Any]]] = {}
    real = train_mod.products_result

    def spy(cell, seed, data, c, *args, **kwargs):
        result = real(cell, seed, data, c, *args, **kwargs)
        train = explicit_train_set(cell, seed)
        w = explicit_init(cell, seed) + c.double().cpu() @ train.x
        seen[seed] = (w, train, result)
        return result

    monkeypatch.setattr(train_mod, "products_result", spy)
    return seen


def last_number_printed(script: str, body: dict[str, Any]) -> int:
    """Run `script` with the JSON `body` as its argument in a fresh interpreter (one thread), and
    return the last number it printed."""
    measured = subprocess.run(
        [sys.executable, "-c", script, json.dumps(body)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(measured.stdout.split()[-1])
