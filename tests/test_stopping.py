"""Both stopping rules and the step budget, on hand-made data and on the data model.

zero_train_error stops after the first step at which every y_i f(x_i) > 0; zero_loss after the
first step at which every y_i f(x_i) >= 1; either way at most max_steps steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

import bo_engine.loop as loop_mod
import bo_engine.train as train_mod
from bo_engine.chunks import Checkpoint, no_checkpoint
from bo_engine.data import TrainSet
from bo_engine.model import network_output
from bo_engine.products import RunData, draw_run_data
from bo_engine.spec import Cell, JobSpec
from bo_engine.train import RunSetup
from tests.engine_helpers import capture_results, train_runs

F64 = torch.float64
# Every test here runs on both training paths of a CPU (tests/conftest.py).
pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("engine_path")]


def run(setups: list[RunSetup], dtype=F64) -> dict[int, dict[str, Any]]:
    """Train a batch; results by the setup's cell_index (used here as a run label)."""
    finished, _ = train_runs(setups, dtype=dtype)
    assert len(finished) == len(setups)
    return {setup.cell_index: result for setup, result in finished}


# --- hand-made data --------------------------------------------------------------------------
#
# d = 1, width 2, alpha = 1: the network is linear, f(x) = u x with u = w_0 - w_1. The points are
# copies of x = +1 (y = +1) and x = -1 (y = -1), so y_i f(x_i) = u for every point, and one GD
# step adds 2 lr * sum_i |x_i| = 1/2 to u (lr chosen so). From u = -1 the margins are
# -1, -1/2, 0, 1/2, 1 at steps 0..4, all exact in binary floating point: y f > 0 first holds at
# step 3 (at step 2 it is exactly 0, which is not a correct classification) and y f >= 1 first
# holds at step 4 (with equality).


def hand_cell(n: int, stop: str, max_steps: int) -> Cell:
    return Cell(
        n=n,
        d=1,
        width=2,
        gamma=0.5,
        corruption_rate=0.0,
        num_corrupt=None,
        alpha=1.0,
        init_scale=1.0,
        lr=1.0 / (4 * n),
        stop=stop,
        max_steps=max_steps,
        n_test=10,
        seeds=1,
        seed=0,
    )


@pytest.fixture
def hand_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def train_set(cell: Cell, seed: int, check: Checkpoint = no_checkpoint) -> TrainSet:
        half = cell.n // 2
        y = torch.tensor([1.0] * half + [-1.0] * half, dtype=F64)
        v = torch.ones(1, dtype=F64)
        return TrainSet(y[:, None].clone(), y, y.clone(), torch.zeros(cell.n, dtype=bool), v)

    def weights(cell: Cell, seed: int, check: Checkpoint = no_checkpoint) -> torch.Tensor:
        return torch.tensor([[-1.0], [0.0]], dtype=F64)

    def run_data(cell: Cell, seed: int, check: Checkpoint = no_checkpoint) -> RunData:
        return RunData.from_explicit(train_set(cell, seed), weights(cell, seed))

    # Each training path draws its runs' data itself: the plain form explicitly, the Gram form
    # as products.
    monkeypatch.setattr(train_mod, "make_train_set", train_set)
    monkeypatch.setattr(train_mod, "init_weights", weights)
    for module in (train_mod, loop_mod):
        monkeypatch.setattr(module, "draw_run_data", run_data)


# (stop, max_steps) -> (steps, stop_reason, margin); n = 2 is the Gram form, n = 8 the plain.
HAND_CASES = {
    ("zero_train_error", 1000): (3, "interpolated", 0.5),
    ("zero_train_error", 3): (3, "interpolated", 0.5),  # reached exactly at the budget
    ("zero_train_error", 2): (2, "max_steps", 0.0),
    ("zero_train_error", 1): (1, "max_steps", -0.5),
    ("zero_loss", 1000): (4, "zero_loss", 1.0),
    ("zero_loss", 3): (3, "max_steps", 0.5),
}


@pytest.mark.usefixtures("hand_data")
@pytest.mark.parametrize("n", [2, 8])
@pytest.mark.parametrize("stop", ["zero_train_error", "zero_loss"])
def test_hand_made_step_counts(n: int, stop: str) -> None:
    # The cases of one rule share a batch: runs with different budgets leave it at their own step.
    cases = [(budget, want) for (rule, budget), want in HAND_CASES.items() if rule == stop]
    setups = [RunSetup(i, hand_cell(n, stop, budget), 0) for i, (budget, _) in enumerate(cases)]
    results = run(setups)
    for i, (budget, (steps, reason, margin)) in enumerate(cases):
        r = results[i]
        assert (r["steps"], r["stop_reason"], r["margin"]) == (steps, reason, margin), budget
        assert r["interpolated"] == (margin > 0)
        assert r["zero_loss"] == (margin >= 1)
        assert r["train_error"] == (0.0 if margin > 0 else 1.0)
        assert r["train_loss"] == pytest.approx(n * max(0.0, 1 - margin), abs=1e-15)
        # W = [[-1 + s/4], [-s/4]] after s steps.
        assert r["weight_norm"] == pytest.approx(((steps / 4 - 1) ** 2 + (steps / 4) ** 2) ** 0.5)


@pytest.mark.usefixtures("hand_data")
def test_mixed_stop_rules_in_one_batch_are_honoured_or_refused() -> None:
    """`train_batch` trains "all runs to their stop rule". Given runs with different rules it
    must apply each run's own rule, or refuse the batch; never apply one run's rule to all."""
    setups = [
        RunSetup(0, hand_cell(2, "zero_train_error", 1000), 0),
        RunSetup(1, hand_cell(2, "zero_loss", 1000), 0),
    ]
    try:
        results = run(setups)
    except ValueError:
        return
    assert (results[0]["steps"], results[0]["stop_reason"]) == (3, "interpolated")
    assert (results[1]["steps"], results[1]["stop_reason"]) == (4, "zero_loss")


# --- the data model ----------------------------------------------------------------------------


def data_cell(d: int, stop: str, max_steps: int) -> Cell:
    """n = 16. With d = 40 one label is flipped (the network must memorise it); with d = 3 none
    is, so the data are linearly separable (<x_i, v> = sqrt(gamma) t_i) and small steps make a
    run take a few of them."""
    noisy = d >= 16
    return JobSpec(
        n=16,
        d=d,
        width=6,
        gamma=0.2,
        num_corrupt=1 if noisy else 0,
        lr=(1.0 if noisy else 0.2) / (6 * 16),
        n_test=10,
        stop=stop,
        max_steps=max_steps,
    ).cells[0]


def margins(w: torch.Tensor, train: TrainSet, alpha: float) -> torch.Tensor:
    return train.y * network_output(w, train.x, alpha)


@pytest.mark.parametrize("d", [40, 3])  # Gram form, plain form
@pytest.mark.parametrize("stop", ["zero_train_error", "zero_loss"])
def test_stops_at_the_first_step_the_rule_holds(monkeypatch, d: int, stop: str) -> None:
    seen = capture_results(monkeypatch)
    seeds = [0, 1, 2]
    full = run([RunSetup(s, data_cell(d, stop, 100_000), s) for s in seeds])
    holds = (
        (lambda m: bool((m > 0).all()))
        if stop == "zero_train_error"
        else (lambda m: bool((m >= 1).all()))
    )
    reason = "interpolated" if stop == "zero_train_error" else "zero_loss"
    for s in seeds:
        r = full[s]
        assert r["stop_reason"] == reason and r["steps"] > 1
        w, train, _ = seen[s]
        assert holds(margins(w, train, 0.1))  # the rule holds at the end, on the explicit W
        assert r["train_error"] == 0.0 and r["interpolated"]
        assert r["zero_loss"] == (stop == "zero_loss")
    # One step earlier the rule did not hold yet: rerun each with max_steps = steps - 1.
    before = run([RunSetup(s, data_cell(d, stop, full[s]["steps"] - 1), s) for s in seeds])
    for s in seeds:
        r = before[s]
        assert r["stop_reason"] == "max_steps" and r["steps"] == full[s]["steps"] - 1
        w, train, _ = seen[s]
        assert not holds(margins(w, train, 0.1))
        if stop == "zero_train_error":
            assert r["train_error"] > 0 and not r["interpolated"]
        else:
            assert r["margin"] < 1 and not r["zero_loss"] and r["train_loss"] > 0


def test_zero_loss_takes_longer_than_zero_train_error() -> None:
    a = run([RunSetup(0, data_cell(40, "zero_train_error", 100_000), 0)])[0]
    b = run([RunSetup(0, data_cell(40, "zero_loss", 100_000), 0)])[0]
    assert b["steps"] > a["steps"]


@pytest.mark.parametrize("d", [40, 3])
def test_max_steps_is_honoured(d: int) -> None:
    results = run([RunSetup(s, data_cell(d, "zero_loss", 5 + s), s) for s in range(3)])
    for s in range(3):
        assert results[s]["steps"] == 5 + s
        assert results[s]["stop_reason"] == "max_steps"
        assert not results[s]["zero_loss"]


def test_a_run_alone_stops_where_it_stops_in_a_batch() -> None:
    setups = [RunSetup(s, data_cell(40, "zero_train_error", 100_000), s) for s in range(4)]
    together = run(setups)
    for setup in setups:
        alone = run([setup])[setup.cell_index]
        assert alone["steps"] == together[setup.cell_index]["steps"]
        assert alone["margin"] == pytest.approx(together[setup.cell_index]["margin"], rel=1e-9)


@pytest.mark.usefixtures("hand_data")
def test_trajectory_on_hand_made_data() -> None:
    """record_every = 2: points at steps 0, 2, 4 (the last step), from the exact margins."""
    [(_, result)], _ = train_runs([RunSetup(0, hand_cell(2, "zero_loss", 1000), 0)], record_every=2)
    trajectory = result["trajectory"]
    assert [p["step"] for p in trajectory] == [0, 2, 4]
    for point, margin in zip(trajectory, [-1.0, 0.0, 1.0], strict=True):
        s = point["step"]
        norm = ((s / 4 - 1) ** 2 + (s / 4) ** 2) ** 0.5
        assert point["margin"] == margin
        assert point["train_loss"] == 2 * (1 - margin)
        assert point["train_error"] == (0.0 if margin > 0 else 1.0)
        assert point["weight_norm"] == pytest.approx(norm, rel=1e-12)
        assert point["normalized_margin"] == pytest.approx(margin / norm, rel=1e-12, abs=1e-15)


def endless_cell() -> Cell:
    """A step size that never reaches zero loss: a run trains until it is stopped."""
    return data_cell(40, "zero_loss", 100_000_000).model_copy(update={"lr": 1e-12})


def cancel_after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


@pytest.mark.usefixtures("two_threads")
def test_cancel_stops_every_training_run_with_reason_cancelled(monkeypatch) -> None:
    monkeypatch.setattr(train_mod, "CANCEL_POLL_SECONDS", 0.0)
    setups = [RunSetup(s, endless_cell(), s) for s in range(2)]
    # Both runs train (they each have a thread, or share the batched program) when it lands.
    finished, cancelled = train_runs(
        setups, should_cancel=cancel_after(0.5), max_margin_baseline=True
    )
    results = {setup.cell_index: result for setup, result in finished}
    assert cancelled is True
    assert [results[s]["stop_reason"] for s in range(2)] == ["cancelled", "cancelled"]
    assert all(0 < results[s]["steps"] < 100_000_000 for s in range(2))
    # The baseline of a cancelled run is skipped, not solved while the cancel waits.
    assert [results[s]["max_margin"] for s in range(2)] == [None, None]


def test_runs_not_yet_training_when_the_cancel_lands_never_start(monkeypatch, engine_path) -> None:
    """The compiled loop trains as many runs at once as torch has threads; after a cancel the
    runs still queued draw no data and report nothing. The batched path prepares every run
    before its first step, so there every run is training, and each ends "cancelled"."""
    monkeypatch.setattr(train_mod, "CANCEL_POLL_SECONDS", 0.0)
    drawn: list[int] = []

    def counted(cell: Cell, seed: int, *check: Checkpoint) -> RunData:
        drawn.append(seed)
        return draw_run_data(cell, seed, *check)

    for module in (train_mod, loop_mod):
        monkeypatch.setattr(module, "draw_run_data", counted)
    setups = [RunSetup(s, endless_cell(), s) for s in range(12)]
    finished, cancelled = train_runs(setups, should_cancel=cancel_after(0.5))
    assert cancelled is True
    assert sorted(setup.seed for setup, _ in finished) == sorted(drawn)
    assert all(result["stop_reason"] == "cancelled" for _, result in finished)
    if engine_path == "compiled_loop":
        assert 0 < len(drawn) <= max(torch.get_num_threads(), 1) < len(setups)
    else:
        assert len(drawn) == len(setups)


@pytest.mark.parametrize(("poll", "asked"), [(0.0, True), (3600.0, False)])
def test_the_cancel_poll_interval_is_the_callers(poll: float, asked: bool) -> None:
    """The caller's interval (a worker's BOLAB_CANCEL_POLL_INTERVAL_S) is the one throttle on
    `should_cancel`: at 0 it is asked even by a run over in milliseconds, at an hour never."""
    from bo_engine.plan import plan_batches
    from bo_engine.runner import batch_cells

    spec = JobSpec.model_validate({"n": 10, "d": 20, "width": 4, "max_steps": 50, "n_test": 10})
    calls: list[float] = []
    batch_cells(
        spec,
        plan_batches(spec)[0],
        should_cancel=lambda: bool(calls.append(time.monotonic())),
        cancel_poll_seconds=poll,
    )
    assert bool(calls) is asked
