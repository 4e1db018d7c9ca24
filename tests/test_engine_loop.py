"""The compiled CPU loop (`bo_engine.loop`) against the batched tensor step, and the thread pool
that `train_batch` runs it in.

The loop keeps the sum of G's rows over the active set and over each row's pattern from step to
step, adjusted by the points that change (or rebuilt from the smaller side of the active set);
the first test checks, float64 over 200 steps on data where both sides of the active set occur,
that the iterates equal the batched `_step`'s, and the last that the kept sums stay exact.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

import bo_engine.loop as loop_mod
from bo_engine.data import make_train_set
from bo_engine.loop import CALL_SECONDS, LoopRun, next_budget, one_thread_per_run, train_run
from bo_engine.model import init_weights, outer_weights
from bo_engine.spec import JobSpec
from bo_engine.train import RunSetup, _build, _outputs, _step
from tests.engine_helpers import force_batched_path, train_runs

pytestmark = pytest.mark.fast

F64 = torch.float64
CPU = torch.device("cpu")
STEPS = 200


def one_run(n: int, d: int, width: int, alpha: float, seed: int = 0):
    """A zero-loss run with half the default step size, so that 200 steps never reach the rule."""
    spec = JobSpec(n=n, d=d, width=width, alpha=alpha, gamma=3 / n, n_test=1, stop="zero_loss")
    cell = spec.cells[0].model_copy(update={"lr": spec.cells[0].lr / 2})
    return cell, make_train_set(cell, seed), init_weights(cell, seed)


@pytest.mark.parametrize("n,d,width,alpha", [(24, 8, 4, 0.1), (24, 60, 16, 0.5), (40, 40, 64, 0.1)])
def test_loop_iterates_equal_the_batched_step(n: int, d: int, width: int, alpha: float) -> None:
    cell, train, w0 = one_run(n, d, width, alpha)
    b = _build([RunSetup(0, cell, 0)], [train], [w0], CPU, F64)
    b.gram, b.x, b.w = (train.x @ train.x.T)[None], None, None  # the Gram form, whatever d
    a = outer_weights(width, F64)
    sides: set[bool] = set()
    for _ in range(STEPS):
        yf = b.y * _outputs(b, a)
        active = yf[0] < 1
        if active.any():
            positive = (b.z[0][:, active] > 0).sum(1)
            sides |= set((2 * positive <= int(active.sum())).tolist())  # the side each row sums
        _step(b, a, yf)

    for steps in (LoopRun.direct_steps, LoopRun.incremental_steps):
        run = LoopRun.build(train.x, train.y, w0, cell.lr, cell.alpha, F64)
        assert steps(run, STEPS, zero_loss=True) == (STEPS, False)  # no early stop: 200 compared
        assert_iterates_equal(run, b, a)
    assert sides == {True, False}


def assert_iterates_equal(run: LoopRun, b, a: torch.Tensor) -> None:
    """The loop's C, Z and outputs are the batched program's."""
    scale = float(b.c.abs().max())
    np.testing.assert_allclose(run.c, b.c[0].numpy(), rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(run.z, b.z[0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.f, _outputs(b, a)[0].numpy(), rtol=0, atol=1e-10)
    assert float((b.z[0] - b.z0[0]).abs().max()) > 1e-3  # training moved Z


@pytest.mark.parametrize("incremental_min_n", [0, 10**9])  # sums kept, or re-summed
def test_train_run_records_resyncs_and_stops_on_budget(monkeypatch, incremental_min_n) -> None:
    """Returning to Python every few steps (records, resyncs) leaves the iterates as they were."""
    monkeypatch.setattr(loop_mod, "INCREMENTAL_MIN_N", incremental_min_n)
    cell, train, w0 = one_run(24, 60, 16, 0.1)
    whole = LoopRun.build(train.x, train.y, w0, cell.lr, cell.alpha, F64)
    assert whole.steps(50, zero_loss=True) == (50, False)

    monkeypatch.setattr(loop_mod, "RESYNC_EVERY", 7)
    chunked = LoopRun.build(train.x, train.y, w0, cell.lr, cell.alpha, F64)
    recorded: list[tuple[int, np.ndarray]] = []
    steps, reached = train_run(
        chunked,
        max_steps=50,
        zero_loss=True,
        record_every=5,
        record=lambda step: recorded.append((step, chunked.f.copy())),
        stop=threading.Event(),
    )
    assert (steps, reached) == (50, False)
    assert [step for step, _ in recorded] == list(range(0, 51, 5))
    np.testing.assert_allclose(chunked.c, whole.c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(recorded[-1][1], whole.f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(chunked.z, chunked.z0 + chunked.c @ chunked.gram, atol=1e-12)


def test_a_set_stop_event_ends_the_run_at_once() -> None:
    cell, train, w0 = one_run(24, 60, 16, 0.1)
    run = LoopRun.build(train.x, train.y, w0, cell.lr, cell.alpha, F64)
    stop = threading.Event()
    stop.set()
    kwargs = {"max_steps": 10_000, "zero_loss": True, "record_every": None, "record": print}
    assert train_run(run, **kwargs, stop=stop) == (0, False)
    assert not run.c.any()


def train_grid(monkeypatch, path: str) -> dict[tuple[int, int], dict[str, Any]]:
    if path == "batched":
        force_batched_path(monkeypatch)
    spec = JobSpec(
        n=12, d=10, width=8, n_test=50, seeds=2, record_every=7, dtype="float64",
        grid={"n": [12, 20], "d": [10, 40]},
    )  # fmt: skip
    setups = [RunSetup(i, c, c.seed + k) for i, c in enumerate(spec.cells) for k in range(2)]
    finished, _ = train_runs(setups, record_every=7, max_margin_baseline=True)
    monkeypatch.undo()
    return {(setup.cell_index, setup.seed): result for setup, result in finished}


@pytest.mark.usefixtures("two_threads")
def test_both_cpu_paths_give_the_same_runs(monkeypatch) -> None:
    loop = train_grid(monkeypatch, "compiled_loop")
    batched = train_grid(monkeypatch, "batched")
    assert loop.keys() == batched.keys() and len(loop) == 8
    for key, mine in loop.items():
        theirs = batched[key]
        assert mine["steps"] == theirs["steps"] > 0
        assert mine["stop_reason"] == theirs["stop_reason"] == "interpolated"
        for name in ("margin", "weight_norm", "train_loss", "test_error", "param_snr"):
            assert mine[name] == pytest.approx(theirs[name], rel=1e-9, abs=1e-12), name
        assert [p["step"] for p in mine["trajectory"]] == [p["step"] for p in theirs["trajectory"]]
        for p, q in zip(mine["trajectory"], theirs["trajectory"], strict=True):
            assert p["margin"] == pytest.approx(q["margin"], rel=1e-9, abs=1e-12)
            assert p["weight_norm"] == pytest.approx(q["weight_norm"], rel=1e-9)


@pytest.mark.usefixtures("two_threads")
def test_an_error_in_a_report_stops_the_runs_and_restores_threads() -> None:
    threads_before = torch.get_num_threads()
    endless = {"stop": "zero_loss", "lr": 1e-9, "max_steps": 50_000_000}
    cell = JobSpec(n=40, d=80, width=16, n_test=10, **endless).cells[0]
    reported: list[int] = []

    def fail(setup: RunSetup, result: dict[str, Any]) -> None:
        reported.append(setup.seed)
        raise RuntimeError("the store is gone")

    short = RunSetup(0, cell.model_copy(update={"max_steps": 1}), 9)
    setups = [short] + [RunSetup(0, cell, s) for s in range(3)]
    with pytest.raises(RuntimeError, match="the store is gone"):
        train_runs(setups, dtype=torch.float32, on_run_done=fail)
    assert reported == [9]  # the short run reported; the endless ones were stopped, not waited on
    assert torch.get_num_threads() == threads_before
    assert not [t for t in threading.enumerate() if t.name.startswith("bolab-run")]


def test_overlapping_batches_restore_the_thread_settings_once_both_are_done() -> None:
    """A threads-pool worker trains batches concurrently: the settings are process-wide."""
    before = torch.get_num_threads()
    first, second = one_thread_per_run(), one_thread_per_run()
    assert first.__enter__() == before
    assert second.__enter__() == before  # not the 1 that the first batch set
    first.__exit__(None, None, None)
    assert torch.get_num_threads() == 1  # the second batch is still training
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == before


def test_the_loop_paces_its_calls_to_a_tenth_of_a_second() -> None:
    """Steps per call follow the time of the last call: up at most fourfold a call, down at once,
    never below one step."""
    assert next_budget(1, 1, 1e-6) == 4  # fast steps: grow, but at most fourfold
    assert next_budget(1000, 1000, CALL_SECONDS) == 1000  # on target: keep
    assert next_budget(1000, 1000, 10 * CALL_SECONDS) == 100  # ten times too slow: cut tenfold
    assert next_budget(5, 5, 60.0) == 1  # one step takes longer than a call should: one a call
    assert next_budget(7, 0, 0.0) == 7  # nothing was taken: nothing learned


def test_a_stop_reaches_a_run_within_a_call(monkeypatch) -> None:
    """With no resync to end a call, only the pacing does: a stop set 0.3 s into a run of
    millions of steps ends it within a few calls of CALL_SECONDS."""
    monkeypatch.setattr(loop_mod, "RESYNC_EVERY", 10**9)
    cell, train, w0 = one_run(400, 400, 256, 0.1)
    cell = cell.model_copy(update={"lr": 1e-12})  # every point stays active: no run ends
    run = LoopRun.build(train.x, train.y, w0, cell.lr, cell.alpha, F64)
    assert run.steps(0, zero_loss=True) == (0, False)  # compiled (or loaded) before the clock
    stop, stopped_at = threading.Event(), []

    def set_stop() -> None:
        stopped_at.append(time.monotonic())
        stop.set()

    timer = threading.Timer(0.3, set_stop)
    timer.start()
    kwargs = {"max_steps": 10**8, "zero_loss": True, "record_every": None, "record": print}
    try:
        steps, reached = train_run(run, **kwargs, stop=stop)
    finally:
        timer.cancel()
    ended = time.monotonic()
    assert not reached and 0 < steps < 10**8
    assert ended - stopped_at[0] < 30 * CALL_SECONDS  # loose: the machine may be busy


def test_the_loop_keeps_exact_sums_over_the_active_set_and_each_rows_exceptions() -> None:
    """After each call, u_pos and u_neg are the sums of lr y_i G_i over A's points of each label,
    and e_j that over row j's exceptions of the last step (+1 where z_ji > 0 > a_j y_i, -1 where
    z_ji <= 0 < a_j y_i), however many points entered or left them on the way."""
    cell, train, w0 = one_run(40, 40, 16, 0.1)
    run = LoopRun.build(train.x, train.y, w0, cell.lr, cell.alpha, F64)
    aligned = run.a[:, None] * run.y[None, :] > 0
    for _ in range(30):
        assert run.incremental_steps(7, zero_loss=True) == (7, False)
        rows = run.lr_y[:, None] * run.gram
        np.testing.assert_allclose(run.u_pos, (run.in_a & (run.y > 0)) @ rows, rtol=0, atol=1e-12)
        np.testing.assert_allclose(run.u_neg, (run.in_a & (run.y < 0)) @ rows, rtol=0, atol=1e-12)
        np.testing.assert_allclose(run.e, run.in_e @ rows, rtol=0, atol=1e-12)
        assert not (run.in_e.astype(bool) & ~run.in_a).any()  # exceptions within A
        assert (run.in_e[aligned] <= 0).all() and (run.in_e[~aligned] >= 0).all()
    assert run.in_a.any() and (run.in_e != 0).any()
