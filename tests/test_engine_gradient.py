"""The engine's GD step is gradient descent on the summed hinge loss, checked against autograd.

The reference is the plain network `bo_engine.model.network_output` (W explicit) differentiated by
torch autograd: W(1) = W(0) - lr * grad_W sum_i relu(1 - y_i f(W, x_i)). The engine never forms
this gradient; it updates C in W = W0 + C X (and Z = W X^T) instead.
"""

from __future__ import annotations

import pytest
import torch

import bo_engine.train as train_mod
from bo_engine.data import TrainSet, make_train_set
from bo_engine.model import init_weights, network_output, outer_weights
from bo_engine.spec import Cell, JobSpec
from bo_engine.train import RunSetup, _build, _outputs, _step
from tests.engine_helpers import capture_results, train_runs

pytestmark = pytest.mark.fast

F64 = torch.float64
CPU = torch.device("cpu")


def make_cell(**fields) -> Cell:
    base = {"n": 12, "d": 20, "width": 8, "n_test": 20, "max_steps": 1}
    return JobSpec(**{**base, **fields}).cells[0]


def hinge_sum(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.relu(1 - y * network_output(w, x, alpha)).sum()


def autograd_gd(w0, x, y, alpha: float, lr: float, steps: int) -> torch.Tensor:
    """Plain full-batch GD with autograd on the explicit weights."""
    return autograd_gd_until_zero_loss(w0, x, y, alpha, lr, steps)[0]


def autograd_gd_until_zero_loss(w0, x, y, alpha, lr, max_steps) -> tuple[torch.Tensor, int]:
    """GD with autograd, stopped when every y_i f(x_i) >= 1 or after max_steps: (W, steps)."""
    w = w0.clone()
    for step in range(max_steps):
        if bool((y * network_output(w, x, alpha) >= 1).all()):
            return w, step
        w.requires_grad_(True)
        (grad,) = torch.autograd.grad(hinge_sum(w, x, y, alpha), w)
        w = (w - lr * grad).detach()
    return w, max_steps


def set_form(b, data: list[TrainSet], w0: list[torch.Tensor], form: str) -> None:
    """Force the Gram form (gram set) or the plain form (x and w set) on a built batch."""
    x = torch.stack([t.x for t in data]).to(b.z.dtype)
    if form == "gram":
        b.gram, b.x, b.w = x @ x.transpose(1, 2), None, None
    else:
        b.gram, b.x, b.w = None, x, torch.stack(w0).to(b.z.dtype)


def engine_one_step(cell: Cell, train: TrainSet, w0: torch.Tensor, form: str):
    """(W(1), Z(1)) from one engine `_step`, W read as W0 + C X."""
    b = _build([RunSetup(0, cell, 0)], [train], [w0], CPU, F64)
    set_form(b, [train], [w0], form)
    a = outer_weights(cell.width, F64)
    yf = b.y * _outputs(b, a)
    _step(b, a, yf)
    w1 = w0 + b.c[0] @ train.x
    if form == "plain":
        torch.testing.assert_close(b.w[0], w1, rtol=0, atol=1e-13)
    return w1, b.z[0]


@pytest.mark.parametrize("form", ["gram", "plain"])
@pytest.mark.parametrize("alpha", [0.1, 0.37, 1.0])
def test_one_step_equals_autograd_on_random_data(form: str, alpha: float) -> None:
    cell = make_cell(alpha=alpha, gamma=0.3, lr=0.05)
    train = make_train_set(cell, seed=3)
    w0 = init_weights(cell, seed=3)
    w1, z1 = engine_one_step(cell, train, w0, form)
    expected = autograd_gd(w0, train.x, train.y, alpha, cell.lr, 1)
    assert (expected - w0).abs().max() > 1e-3  # the step is not trivially small
    torch.testing.assert_close(w1, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(z1, expected @ train.x.T, rtol=0, atol=1e-12)


def hand_made(n: int) -> tuple[TrainSet, torch.Tensor]:
    """Points that are exactly inactive (y f = 1), strictly inactive, active, misclassified, and
    pre-activations that are exactly 0 (where sigma' must be alpha, as autograd's leaky ReLU)."""
    e = torch.eye(4, dtype=F64)
    points = [
        (e[0], 1.0),  # z = (1, 0, 0, 0): f = 1 exactly -> y f = 1, inactive
        (2 * e[0], 1.0),  # f = 2, inactive
        (e[1], 1.0),  # z = (0, 0, .5, 0): f = .5, active; z = 0 on three units
        (-e[1], -1.0),  # f = -.5 alpha, active
        (e[2], -1.0),  # z3 = .25: f = -.25, y f = .25, active
        (e[0] + e[3], -1.0),  # f = 1, y f = -1, misclassified
        (3 * e[0], 1.0),  # inactive
        (1.5 * e[0], 1.0),  # inactive
        (e[0], 1.0),  # exactly inactive again
        (4 * e[0], 1.0),  # inactive
    ][:n]
    x = torch.stack([p for p, _ in points])
    y = torch.tensor([label for _, label in points], dtype=F64)
    w0 = torch.zeros(4, 4, dtype=F64)
    w0[0, 0] = 1.0  # unit 1 stays all-zero: every pre-activation of it is exactly 0
    w0[2, 1] = 0.5
    w0[3, 2] = 0.25
    train = TrainSet(x, y, y.clone(), torch.zeros(n, dtype=torch.bool), e[0].clone())
    return train, w0


@pytest.mark.parametrize("form", ["gram", "plain"])
@pytest.mark.parametrize("n", [6, 10])  # 4 active of 6 (dense update), of 10 (active columns)
def test_one_step_with_exactly_inactive_points_and_zero_preactivations(
    monkeypatch, form: str, n: int
) -> None:
    # Let the active-column update apply at this tiny size, and see that it does when 2k < n.
    monkeypatch.setattr(train_mod, "ACTIVE_PATH_MIN_WORK", 0)
    gathered: list[int] = []
    real_active_columns = train_mod._active_columns
    monkeypatch.setattr(
        train_mod,
        "_active_columns",
        lambda active, k: gathered.append(k) or real_active_columns(active, k),
    )
    alpha, lr = 0.3, 0.125
    train, w0 = hand_made(n)
    yf0 = train.y * network_output(w0, train.x, alpha)
    assert yf0[0] == 1.0 and (yf0 < 1).sum() == 4
    cell = Cell(
        n=n,
        d=4,
        width=4,
        gamma=0.0,
        corruption_rate=0.1,
        num_corrupt=None,
        alpha=alpha,
        init_scale=1.0,
        lr=lr,
        stop="zero_loss",
        max_steps=10,
        n_test=4,
        seeds=1,
        seed=0,
    )
    w1, z1 = engine_one_step(cell, train, w0, form)
    assert gathered == ([4] if (form, n) == ("gram", 10) else [])
    expected = autograd_gd(w0, train.x, train.y, alpha, lr, 1)
    torch.testing.assert_close(w1, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(z1, expected @ train.x.T, rtol=0, atol=1e-12)
    # The hand value of one entry: unit 1 (a = -1) has z = 0 everywhere, so sigma' = alpha and
    # w_1 moves by -lr * alpha * sum_{active} y_i x_i.
    active = yf0 < 1
    hand = -lr * alpha * (train.y[active, None] * train.x[active]).sum(0)
    torch.testing.assert_close(w1[1], hand, rtol=0, atol=1e-15)


@pytest.mark.usefixtures("engine_path")  # both CPU training paths (tests/conftest.py)
@pytest.mark.parametrize("d", [20, 2])  # Gram form (4d >= n) and plain form (4d < n)
def test_train_batch_one_step_through_result_path(monkeypatch, d: int) -> None:
    seen = capture_results(monkeypatch)
    cell = make_cell(d=d, alpha=0.2, gamma=0.2, stop="zero_loss", max_steps=1)
    train_runs([RunSetup(0, cell, 5)])
    w1, _, result = seen[5]
    train = make_train_set(cell, 5)
    w0 = init_weights(cell, 5)
    expected = autograd_gd(w0, train.x, train.y, cell.alpha, cell.lr, 1)
    torch.testing.assert_close(w1, expected, rtol=0, atol=1e-12)
    assert result["steps"] == 1 and result["stop_reason"] == "max_steps"
    assert result["weight_norm"] == pytest.approx(float(expected.norm()), rel=1e-12)
    yf = train.y * network_output(expected, train.x, cell.alpha)
    assert result["margin"] == pytest.approx(float(yf.min()), rel=1e-10)


@pytest.mark.usefixtures("engine_path")  # both CPU training paths (tests/conftest.py)
@pytest.mark.parametrize("d", [20, 2])
def test_batched_runs_that_stop_at_different_steps_follow_autograd_gd(monkeypatch, d) -> None:
    """Runs leave the batch at different steps; each survivor's W must still be its own GD."""
    seen = capture_results(monkeypatch)
    budgets = {0: 3, 1: 17, 2: 60, 3: 1}
    setups = [
        RunSetup(
            i, make_cell(d=d, alpha=0.25, gamma=0.1, stop="zero_loss", max_steps=m, lr=0.02), i
        )
        for i, m in budgets.items()
    ]
    train_runs(setups)
    stopped_early = 0
    for setup in setups:
        train = make_train_set(setup.cell, setup.seed)
        w0 = init_weights(setup.cell, setup.seed)
        budget = budgets[setup.seed]
        expected, steps = autograd_gd_until_zero_loss(w0, train.x, train.y, 0.25, 0.02, budget)
        w, _, result = seen[setup.seed]
        assert result["steps"] == steps
        assert result["stop_reason"] == ("max_steps" if steps == budget else "zero_loss")
        stopped_early += steps < budget
        torch.testing.assert_close(w, expected, rtol=0, atol=1e-11)
    assert stopped_early >= 1  # the batch really shrank mid-run


@pytest.mark.usefixtures("engine_path")  # both CPU training paths (tests/conftest.py)
def test_padded_gram_batch_of_different_n_and_d_follows_autograd_gd(monkeypatch) -> None:
    """Gram-form runs of different n and d share a batch (padded to the largest n); each run's W
    must be its own GD, whatever the padding."""
    seen = capture_results(monkeypatch)
    shapes = {0: (12, 20, 25), 1: (16, 5, 60), 2: (9, 40, 8), 3: (16, 16, 60)}  # n, d, budget
    setups = [
        RunSetup(i, make_cell(n=n, d=d, alpha=0.3, gamma=0.1, stop="zero_loss", max_steps=m), i)
        for i, (n, d, m) in shapes.items()
    ]
    assert len({s.cell.shape_key() for s in setups}) == 1  # one batch in the runner's plan
    train_runs(setups)
    for setup in setups:
        cell = setup.cell
        train = make_train_set(cell, setup.seed)
        w0 = init_weights(cell, setup.seed)
        expected, steps = autograd_gd_until_zero_loss(
            w0, train.x, train.y, cell.alpha, cell.lr, cell.max_steps
        )
        w, _, result = seen[setup.seed]
        assert w.shape == (cell.width, cell.d)
        assert result["steps"] == steps
        torch.testing.assert_close(w, expected, rtol=0, atol=1e-11)
        f = network_output(expected, train.x, cell.alpha)
        assert result["margin"] == pytest.approx(float((train.y * f).min()), rel=1e-9)
