"""The hard-margin linear baseline: known answers, non-separable sets, an independent solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from bo_engine.baselines import max_margin_classifier
from bo_engine.chunks import Stopped
from bo_engine.data import make_test_set, make_train_set
from bo_engine.spec import JobSpec

pytestmark = pytest.mark.fast

F64 = torch.float64


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def max_margin(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, clean: torch.Tensor
) -> dict[str, float | bool | None]:
    """The baseline's reported numbers, with test points given explicitly."""
    w = max_margin_classifier(x, y)
    if w is None:
        return {"norm": None, "test_error": None, "separable": False}
    wrong = torch.sign(x_test @ w) != clean
    return {"norm": float(w.norm()), "test_error": float(wrong.double().mean()), "separable": True}


def rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return t([[c, -s], [s, c]])


@pytest.mark.parametrize("theta", [0.0, 0.7, -2.1])
def test_symmetric_2d_set_with_analytic_answer(theta: float) -> None:
    """Points (+-1, +-1) labelled by the sign of the first coordinate, plus points further out:
    w* = (1, 0) with all four corners on the margin, ||w*|| = 1. Rotating the set rotates w*."""
    x = t([[1, 1], [1, -1], [-1, 1], [-1, -1], [2, 0.3], [-3, -0.5], [1.5, -4]])
    y = t([1, 1, -1, -1, 1, -1, 1])
    r = rotation(theta)
    x = x @ r.T
    w_star = r @ t([1, 0])
    x_test = t([[0.5, 3], [-0.2, -1], [2, 2], [-0.1, 5]]) @ r.T
    clean = t([1, -1, -1, 1])  # sign(<w*, x>) = (+, -, +, -): two right, two wrong
    assert torch.equal(torch.sign(x_test @ w_star), t([1, -1, 1, -1]))
    result = max_margin(x, y, x_test, clean)
    assert result["separable"] is True
    assert result["norm"] == pytest.approx(1.0, rel=1e-6)
    assert result["test_error"] == 0.5


def test_two_points_with_both_constraints_active() -> None:
    """x = (1, 0) with y = +1 and (1, 1) with y = -1: min ||w|| s.t. w_0 >= 1, w_0 + w_1 <= -1
    is w* = (1, -2), ||w*|| = sqrt 5."""
    x, y = t([[1, 0], [1, 1]]), t([1, -1])
    x_test = t([[1, -1], [0, 1], [3, 1]])  # <w*, x> = 3, -2, 1
    result = max_margin(x, y, x_test, t([1, -1, -1]))
    assert result["separable"] is True
    assert result["norm"] == pytest.approx(math.sqrt(5), rel=1e-9)
    assert result["test_error"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("n,d", [(6, 6), (6, 15), (30, 31)])
def test_orthonormal_points(n: int, d: int) -> None:
    """x_i = e_i: w* = sum_i y_i e_i, ||w*|| = sqrt(n)."""
    x = torch.eye(d, dtype=F64)[:n]
    y = torch.tensor([(-1.0) ** (i * (i + 1) // 2) for i in range(n)], dtype=F64)
    # Test points: the training points themselves (right), and with flipped labels (wrong).
    x_test = torch.cat([x, x])
    clean = torch.cat([y, -y])
    result = max_margin(x, y, x_test, clean)
    assert result["separable"] is True
    assert result["norm"] == pytest.approx(math.sqrt(n), rel=1e-9)
    assert result["test_error"] == 0.5


@pytest.mark.parametrize(
    "x,y",
    [
        ([[1.0], [2.0]], [1, -1]),  # 1-D, both sides of the origin needed on one side
        ([[0.0, 1.0], [0.0, -2.0], [1.0, 0.0]], [1, 1, -1]),  # x_2 = -2 x_1, same label
        ([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], [1, 1, -1, -1]),  # XOR
        ([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], [1, -1]),  # a point at the origin
    ],
)
def test_non_separable_sets(x, y) -> None:
    result = max_margin(t(x), t(y), t([[1.0] * len(x[0])]), t([1]))
    assert result == {"norm": None, "test_error": None, "separable": False}


def test_duplicate_point_with_opposite_labels_in_high_dimension() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 30, generator=gen, dtype=F64)
    x[5] = x[2]
    y = t([1, -1, 1, 1, -1, -1, 1, -1])  # y_2 = +1, y_5 = -1 on the same input
    assert max_margin(x, y, x[:1], y[:1])["separable"] is False


def slsqp_max_margin(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """min 1/2 ||w||^2 s.t. y_i <w, x_i> >= 1, by scipy's SLSQP on the primal, from a feasible
    start: a given separating direction, or the least-squares solution of y_i <w, x_i> = 1."""
    yx = y[:, None] * x
    if start is None:
        start = np.linalg.lstsq(yx, np.ones(len(y)), rcond=None)[0]
    start = start / (yx @ start).min()  # scaled onto the feasible set
    res = minimize(
        lambda w: 0.5 * w @ w,
        start,
        jac=lambda w: w,
        constraints=[{"type": "ineq", "fun": lambda w: yx @ w - 1, "jac": lambda w: yx}],
        method="SLSQP",
        options={"maxiter": 1000, "ftol": 1e-12},
    )
    assert res.success, res.message
    assert (yx @ res.x).min() >= 1 - 1e-8
    return res.x


def start(train, corruption: float) -> np.ndarray | None:
    """v separates clean data (<x_i, v> = sqrt(gamma) t_i); otherwise least squares (d >= n)."""
    return train.v.numpy() if corruption == 0 else None


@pytest.mark.parametrize(
    "n,d,gamma,corruption",
    [
        (20, 50, 0.1, 0.1),  # d > n, noisy labels
        (25, 25, 0.05, 0.2),  # d = n, badly conditioned
        (40, 12, 0.5, 0.0),  # d < n, separable along v
        (60, 20, 0.2, 0.0),
    ],
)
def test_matches_an_independent_solver(n: int, d: int, gamma: float, corruption: float) -> None:
    cell = JobSpec(n=n, d=d, gamma=gamma, corruption_rate=corruption, n_test=500).cells[0]
    train = make_train_set(cell, 0)
    x_test, clean = make_test_set(cell, 0, train.v)
    w_ref = slsqp_max_margin(train.x.numpy(), train.y.numpy(), start=start(train, corruption))
    result = max_margin(train.x, train.y, x_test, clean)
    assert result["separable"] is True
    assert result["norm"] == pytest.approx(float(np.linalg.norm(w_ref)), rel=1e-4)
    ref_error = float(np.mean(np.sign(x_test.numpy() @ w_ref) != clean.numpy()))
    assert result["test_error"] == pytest.approx(ref_error, abs=2 / 500)


@pytest.mark.parametrize("n,d", [(40, 8), (30, 3)])
def test_random_separable_set_with_d_below_n(n: int, d: int) -> None:
    """Labels from a random hyperplane through the origin: separable with d < n, so the dual
    is singular and w* has many support vectors in general position."""
    gen = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    u = torch.randn(d, generator=gen, dtype=F64)
    y = torch.sign(x @ u)
    x_test = torch.randn(300, d, generator=gen, dtype=F64)
    clean = torch.sign(x_test @ u)
    w_ref = slsqp_max_margin(x.numpy(), y.numpy(), start=u.numpy())
    result = max_margin(x, y, x_test, clean)
    assert result["separable"] is True
    assert result["norm"] == pytest.approx(float(np.linalg.norm(w_ref)), rel=1e-4)
    ref_error = float(np.mean(np.sign(x_test.numpy() @ w_ref) != clean.numpy()))
    assert result["test_error"] == pytest.approx(ref_error, abs=2 / 300)


@pytest.mark.parametrize("d", [60, 20])  # NNLS alone; NNLS fails, then L-BFGS-B (d < n)
def test_a_stop_ends_the_solve_at_its_next_stage(d: int) -> None:
    cell = JobSpec(n=40, d=d, gamma=0.1, corruption_rate=0.2, n_test=10).cells[0]
    train = make_train_set(cell, 0)
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 1:
            raise Stopped

    with pytest.raises(Stopped):
        max_margin_classifier(train.x, train.y, check)
    assert len(calls) == 2
