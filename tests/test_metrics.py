"""Fit, margin and norm metrics on cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from bo_engine.data import TrainSet, draw_test_outputs
from bo_engine.metrics import fit_metrics, run_result
from bo_engine.results import cells_to_csv, describe, summarize_cell, summary_rows, wilson_ci95
from bo_engine.spec import Cell, TheoryRule
from bo_engine.theory import theory

pytestmark = pytest.mark.fast

F64 = torch.float64


def test_fit_metrics_by_hand() -> None:
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=F64)
    f = torch.tensor([2.0, 0.5, 0.0, -3.0], dtype=F64)
    # y f = (2, -0.5, 0, 3): hinge terms (0, 1.5, 1, 0); y f <= 0 counts as an error (f = 0 too).
    assert fit_metrics(y, f) == {"train_loss": 2.5, "train_error": 0.5, "margin": -0.5}
    f_fit = torch.tensor([1.5, -0.25, 0.75, -1.0], dtype=F64)
    assert fit_metrics(y, f_fit) == {"train_loss": 1.0, "train_error": 0.0, "margin": 0.25}


def hand_cell(**fields) -> Cell:
    values = dict(
        n=4,
        d=3,
        width=2,
        gamma=0.25,
        corruption_rate=0.1,
        num_corrupt=None,
        alpha=0.5,
        init_scale=1.0,
        lr=0.1,
        stop="zero_train_error",
        max_steps=10,
        n_test=400,
        seeds=1,
        seed=0,
    )
    return Cell(**{**values, **fields})


# W (width 2, d 3) with a = (+1, -1), alpha = 1/2, v = e_0:
#   f(x) = sigma(3 x_0 + 4 x_2) - sigma(x_1)
#   ||W||_F = sqrt(9 + 16 + 1) = sqrt(26),  W v = (3, 0),  W (I - v v^T) = [[0, 0, 4], [0, 1, 0]]
W = torch.tensor([[3.0, 0.0, 4.0], [0.0, 1.0, 0.0]], dtype=F64)
X = torch.tensor(
    [
        [1.0, 0.0, 0.0],  # z = (3, 0): f = 3, y = +1 -> y f = 3
        [0.0, 1.0, 0.0],  # z = (0, 1): f = -1, y = +1 (flipped) -> y f = -1, flip not fitted
        [0.0, -2.0, 0.0],  # z = (0, -2): f = 0 - (-1) = 1, y = +1 (flipped) -> 1, flip fitted
        [-1.0, 0.0, 0.5],  # z = (-1, 0): f = -1/2, y = -1 -> y f = 1/2
    ],
    dtype=F64,
)
Y = torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64)
CLEAN = torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64)
V = torch.tensor([1.0, 0.0, 0.0], dtype=F64)


def hand_train() -> TrainSet:
    return TrainSet(X, Y, CLEAN, Y != CLEAN, V)


def by_hand_network(w: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    z = x @ w.T
    s = torch.maximum(z, alpha * z)
    return s[:, 0::2].sum(1) - s[:, 1::2].sum(1)


def test_run_result_by_hand() -> None:
    cell = hand_cell()
    f = torch.tensor([3.0, -1.0, 1.0, -0.5], dtype=F64)
    assert torch.equal(by_hand_network(W, X, 0.5), f)
    r = run_result(
        cell, 7, hand_train(), W, f, 12, "max_steps",
        max_margin_baseline=True, rule=TheoryRule(), trajectory=None,
    )  # fmt: skip
    assert r["seed"] == 7 and r["steps"] == 12 and r["stop_reason"] == "max_steps"
    assert r["interpolated"] is False and r["zero_loss"] is False
    assert r["train_loss"] == 2.5  # hinge terms (0, 2, 0, 1/2)
    assert r["train_error"] == 0.25
    assert r["margin"] == -1.0
    assert r["weight_norm"] == pytest.approx(math.sqrt(26), rel=1e-15)
    assert r["normalized_margin"] == pytest.approx(-1 / math.sqrt(26), rel=1e-15)
    assert r["param_snr"] == pytest.approx(3 / math.sqrt(17), rel=1e-14)
    assert r["corrupt_fit_fraction"] == 0.5  # of the two flipped points, one is fitted
    # Test error against clean labels, with the network written out independently on the
    # test pre-activations (whose law tests/test_data.py checks against explicit test points).
    pre, _, clean_test = draw_test_outputs(cell, 7, V, W)
    s = torch.maximum(pre, 0.5 * pre)
    wrong = torch.sign(s[:, 0::2].sum(1) - s[:, 1::2].sum(1)) != clean_test
    assert r["test_error"] == pytest.approx(float(wrong.double().mean()), abs=1e-15)
    assert 0 < r["test_error"] < 1
    assert r["theory"] == theory(cell, TheoryRule())
    # Points 2 and 3 both have label +1 but x_3 = -2 x_2: no linear separator through 0.
    assert r["max_margin"] == {
        "norm": None,
        "test_error": None,
        "separable": False,
        "margin_ratio": None,
    }
    assert "trajectory" not in r


def test_run_result_interpolating_case_and_none_fields() -> None:
    # W = [[2, 0, 0], [0, 0, 0]]: all weight along v, so no noise norm -> param_snr None.
    w = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    x = torch.tensor([[1.0, 0.5, 0.0], [-1.0, 0.0, 2.0], [0.5, -1.0, 0.0]], dtype=F64)
    y = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    train = TrainSet(x, y, y.clone(), torch.zeros(3, dtype=torch.bool), V)
    f = by_hand_network(w, x, 0.5)  # (2, -1, 1): y f = (2, 1, 1)
    cell = hand_cell(n=3)
    r = run_result(
        cell, 0, train, w, f, 3, "zero_loss",
        max_margin_baseline=True, rule=TheoryRule(), trajectory=[],
    )  # fmt: skip
    assert r["interpolated"] is True and r["zero_loss"] is True
    assert r["train_loss"] == 0.0 and r["train_error"] == 0.0 and r["margin"] == 1.0
    assert r["weight_norm"] == 2.0 and r["normalized_margin"] == 0.5
    assert r["param_snr"] is None
    assert r["corrupt_fit_fraction"] is None  # no corrupted points
    # Linearly separable (w = (2, 0, 0) gives y <w, x> = (2, 2, 1)); margin_ratio = ||W|| / ||w*||.
    baseline = r["max_margin"]
    assert baseline["separable"] is True
    assert baseline["margin_ratio"] == pytest.approx(2.0 / baseline["norm"], rel=1e-12)
    # The trajectory gets its final point.
    assert r["trajectory"] == [
        {
            "step": 3,
            "train_loss": 0.0,
            "train_error": 0.0,
            "margin": 1.0,
            "normalized_margin": 0.5,
            "weight_norm": 2.0,
        }
    ]


def test_param_snr_on_a_random_case() -> None:
    """param_snr = ||W v|| / ||W (I - v v^T)||_F, computed with the projector written out."""
    gen = torch.Generator().manual_seed(0)
    d, width, n = 9, 6, 5
    w = torch.randn(width, d, generator=gen, dtype=F64)
    v = torch.randn(d, generator=gen, dtype=F64)
    v /= v.norm()
    x = torch.randn(n, d, generator=gen, dtype=F64)
    y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0], dtype=F64)
    clean = y.clone()
    clean[1] = 1.0
    train = TrainSet(x, y, clean, y != clean, v)
    cell = hand_cell(n=n, d=d, width=width, alpha=0.1, n_test=20)
    f = by_hand_network(w, x, 0.1)
    r = run_result(
        cell, 1, train, w, f, 1, "max_steps",
        max_margin_baseline=False, rule=TheoryRule(), trajectory=None,
    )  # fmt: skip
    projector = torch.eye(d, dtype=F64) - torch.outer(v, v)
    expected = float((w @ v).norm() / (w @ projector).norm())
    assert r["param_snr"] == pytest.approx(expected, rel=1e-12)
    assert r["weight_norm"] == pytest.approx(float(torch.linalg.matrix_norm(w)), rel=1e-14)
    assert r["corrupt_fit_fraction"] == (1.0 if float(y[1] * f[1]) > 0 else 0.0)
    assert r["margin"] == pytest.approx(float((y * f).min()), rel=1e-15)
    assert r["max_margin"] is None


def test_describe_summary_statistics() -> None:
    # t interval: mean +- t(0.975, 2 dof) * std / sqrt(3), with t(0.975, 2) = 4.302652729...
    half = 4.302652729749464 * math.sqrt(7.0) / math.sqrt(3.0)
    assert describe([1.0, None, 2.0, 6.0]) == {
        "mean": 3.0,
        "std": pytest.approx(math.sqrt(7.0)),  # sample std: ((4 + 1 + 9) / 2) ** .5
        "min": 1.0,
        "max": 6.0,
        "ci95": [pytest.approx(3.0 - half), pytest.approx(3.0 + half)],
        "count": 3,
    }
    one = {"mean": 5.0, "std": 0.0, "min": 5.0, "max": 5.0, "ci95": None, "count": 1}
    assert describe([5.0]) == one
    none = {"mean": None, "std": None, "min": None, "max": None, "ci95": None, "count": 0}
    assert describe([None, None]) == none
    assert describe([0.2, 0.2])["ci95"] == [pytest.approx(0.2), pytest.approx(0.2)]


def test_wilson_interval_of_a_fraction() -> None:
    # Wilson score interval of 8 successes in 10 trials (z = 1.96): [0.4902, 0.9433].
    low, high = wilson_ci95(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_ci95(10, 10)[1] == pytest.approx(1.0)
    assert wilson_ci95(0, 10)[0] == pytest.approx(0.0) and wilson_ci95(0, 0) is None


def test_csv_adds_interval_columns_after_the_existing_ones() -> None:
    runs = [{"test_error": e, "interpolated": e < 0.3} for e in (0.1, 0.2, 0.4)]
    cell = summarize_cell(0, hand_cell(), runs)
    header = cells_to_csv([cell]).splitlines()[0].split(",")
    existing = header.index("runs")
    assert header[existing + 1 :][:2] == ["test_error_ci95_lo", "test_error_ci95_hi"]
    assert header[-2:] == ["interpolated_fraction_ci95_lo", "interpolated_fraction_ci95_hi"]
    row = summary_rows([cell])[0]
    assert row["test_error_ci95_lo"] < row["test_error_mean"] < row["test_error_ci95_hi"]
    assert cell["summary"]["interpolated"]["ci95"] == wilson_ci95(2, 3)
