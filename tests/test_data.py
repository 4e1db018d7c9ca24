"""The data model of DESIGN.md: x = sqrt(gamma) t v + sqrt(1 - gamma) xi, xi orthogonal to v."""

from __future__ import annotations

import math

import pytest
import torch

from bo_engine.data import draw_test_outputs, make_test_set, make_train_set, signal_direction
from bo_engine.model import init_weights
from bo_engine.spec import Cell, JobSpec

pytestmark = pytest.mark.fast


def make_cell(**fields) -> Cell:
    base = {"n": 40, "d": 30, "gamma": 0.2, "n_test": 50}
    return JobSpec(**{**base, **fields}).cells[0]


def z_score(observed: float, expected: float, std_error: float) -> float:
    return abs(observed - expected) / std_error


@pytest.mark.parametrize("d", [1, 7, 300])
def test_signal_direction_is_a_unit_vector(d: int) -> None:
    for seed in range(3):
        v = signal_direction(d, seed)
        assert v.shape == (d,) and v.dtype == torch.float64
        assert abs(float(v.norm()) - 1.0) < 1e-12


def test_noise_is_orthogonal_to_v_and_the_signal_is_exact() -> None:
    cell = make_cell(n=200, d=50, gamma=0.3)
    t = make_train_set(cell, seed=1)
    assert t.x.shape == (200, 50) and t.x.dtype == torch.float64
    noise = t.x - math.sqrt(0.3) * t.clean[:, None] * t.v[None, :]
    assert float((noise @ t.v).abs().max()) < 1e-12
    # <x_i, v> = sqrt(gamma) t_i: the signal component carries the clean label only.
    torch.testing.assert_close(t.x @ t.v, math.sqrt(0.3) * t.clean, rtol=0, atol=1e-12)
    x_test, clean_test = make_test_set(cell, 1, t.v)
    noise_test = x_test - math.sqrt(0.3) * clean_test[:, None] * t.v[None, :]
    assert float((noise_test @ t.v).abs().max()) < 1e-12


@pytest.mark.parametrize("gamma", [0.0, 0.05, 0.6])
def test_squared_norms_match_the_model(gamma: float) -> None:
    """E||x||^2 = gamma + (1 - gamma)(d - 1)/d, since ||xi||^2 ~ chi^2_{d-1} / d."""
    n, d = 4000, 40
    t = make_train_set(make_cell(n=n, d=d, gamma=gamma), seed=0)
    sq = t.x.pow(2).sum(1)
    expected = gamma + (1 - gamma) * (d - 1) / d
    std = (1 - gamma) * math.sqrt(2 * (d - 1)) / d  # sd of (1 - gamma) chi^2_{d-1} / d
    assert z_score(float(sq.mean()), expected, std / math.sqrt(n)) < 4.5
    # The spread matches a chi-square too (guards against a wrong scale such as 1/d vs 1/sqrt d).
    assert float(sq.std()) == pytest.approx(std, rel=0.1)


def test_noise_is_isotropic_in_the_complement_of_v() -> None:
    """E[xi xi^T] = (I - v v^T) / d: the projection onto any unit u orthogonal to v has
    variance 1/d, and distinct noise coordinates are uncorrelated."""
    n, d, gamma = 4000, 10, 0.1
    t = make_train_set(make_cell(n=n, d=d, gamma=gamma), seed=2)
    xi = (t.x - math.sqrt(gamma) * t.clean[:, None] * t.v) / math.sqrt(1 - gamma)
    cov = xi.T @ xi / n
    expected = (torch.eye(d, dtype=torch.float64) - torch.outer(t.v, t.v)) / d
    # Each entry of a sample covariance of Gaussians has sd <= sqrt(2/n)/d.
    assert float((cov - expected).abs().max()) < 5 * math.sqrt(2 / n) / d


def test_clean_labels_are_balanced() -> None:
    n = 5000
    t = make_train_set(make_cell(n=n, d=2), seed=0)
    assert set(t.clean.tolist()) == {-1.0, 1.0}
    share = float((t.clean > 0).double().mean())
    assert z_score(share, 0.5, math.sqrt(0.25 / n)) < 4.5


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_corruption_share(rate: float) -> None:
    n, seeds = 5000, 2
    flipped = 0
    for seed in range(seeds):
        t = make_train_set(make_cell(n=n, d=2, corruption_rate=rate), seed=seed)
        assert torch.equal(t.corrupted, t.y != t.clean)
        assert torch.equal(t.y, torch.where(t.corrupted, -t.clean, t.clean))
        flipped += int(t.corrupted.sum())
    total = n * seeds
    if rate == 0:
        assert flipped == 0
    else:
        assert z_score(flipped / total, rate, math.sqrt(rate * (1 - rate) / total)) < 4.5


@pytest.mark.parametrize("n,k", [(10, 0), (10, 1), (11, 5), (40, 19)])
def test_num_corrupt_flips_exactly_k(n: int, k: int) -> None:
    positions = set()
    for seed in range(4):
        t = make_train_set(make_cell(n=n, d=3, num_corrupt=k), seed=seed)
        assert int(t.corrupted.sum()) == k
        assert int((t.y != t.clean).sum()) == k
        positions.add(tuple(t.corrupted.nonzero().flatten().tolist()))
    if 0 < k < n - 1:
        assert len(positions) > 1  # which points flip is random


def test_corrupted_points_carry_the_wrong_label_relative_to_the_signal() -> None:
    t = make_train_set(make_cell(n=500, d=20, gamma=0.2, corruption_rate=0.2), seed=4)
    along_v = torch.sign(t.x @ t.v)
    assert torch.equal(along_v, t.clean)
    assert torch.equal(along_v != t.y, t.corrupted)


def test_test_labels_are_clean() -> None:
    cell = make_cell(d=20, gamma=0.2, corruption_rate=0.45, n_test=3000)
    t = make_train_set(cell, seed=0)
    x_test, clean_test = make_test_set(cell, 0, t.v)
    assert x_test.shape == (3000, 20) and clean_test.shape == (3000,)
    # Never flipped: every label agrees with the signal it was drawn with.
    assert torch.equal(torch.sign(x_test @ t.v), clean_test)
    share = float((clean_test > 0).double().mean())
    assert z_score(share, 0.5, math.sqrt(0.25 / 3000)) < 4.5
    sq = x_test.pow(2).sum(1)
    assert float(sq.mean()) == pytest.approx(0.2 + 0.8 * 19 / 20, rel=0.02)


def all_tensors(cell: Cell, seed: int) -> list[torch.Tensor]:
    t = make_train_set(cell, seed)
    return [t.x, t.y, t.clean, t.corrupted, t.v, *make_test_set(cell, seed, t.v)] + [
        init_weights(cell, seed)
    ]


def test_same_cell_and_seed_give_identical_tensors() -> None:
    cell = make_cell()
    first, second = all_tensors(cell, 7), all_tensors(cell, 7)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_data_ignores_fields_it_does_not_depend_on() -> None:
    """The data of (cell, seed) is the same whatever the training settings or the grid it is in:
    the basis of a shared result cache."""
    cell = make_cell()
    others = [
        cell.model_copy(update={"lr": 0.5, "max_steps": 3, "stop": "zero_loss", "seeds": 9}),
        JobSpec(grid={"n": [40, 50], "d": [30, 31]}, gamma=0.2, n_test=50).cells[0],
    ]
    for other in others:
        for a, b in zip(all_tensors(cell, 3), all_tensors(other, 3), strict=True):
            assert torch.equal(a, b)


def test_different_seeds_give_different_data() -> None:
    cell = make_cell()
    a, b = all_tensors(cell, 0), all_tensors(cell, 1)
    names = ["x", "y", "clean", "corrupted", "v", "x_test", "clean_test", "w0"]
    for name, ta, tb in zip(names, a, b, strict=True):
        if name == "corrupted":
            continue  # may coincide (often all False for small n)
        assert not torch.equal(ta, tb), name


@pytest.mark.parametrize("gamma,d,width", [(0.2, 30, 8), (0.0, 12, 16), (0.6, 5, 8)])
def test_implicit_test_outputs_follow_the_law_of_explicit_test_points(
    gamma: float, d: int, width: int
) -> None:
    """`draw_test_outputs` draws (W x, <u, x>) without forming x: same mean given the label and same
    covariance as x @ [W; u].T on explicit test points, including d <= width (singular)."""
    cell = JobSpec(n=20, d=d, gamma=gamma, n_test=100_000).cells[0]
    train = make_train_set(cell, 3)
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(width, d, generator=gen, dtype=torch.float64)
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    pre, lin, clean = draw_test_outputs(cell, 3, train.v, w, u)
    x_test, clean_x = make_test_set(cell, 3, train.v)
    implicit = torch.cat([pre, lin[:, None]], 1)
    explicit = torch.cat([x_test @ w.T, (x_test @ u)[:, None]], 1)
    scale = float(explicit.std(0).max())
    tol = 6 * scale / math.sqrt(cell.n_test)  # a few standard errors of a mean
    signed_implicit = (implicit * clean[:, None]).mean(0)
    signed_explicit = (explicit * clean_x[:, None]).mean(0)
    assert torch.allclose(signed_implicit, signed_explicit, atol=tol)
    assert torch.allclose(torch.cov(implicit.T), torch.cov(explicit.T), atol=4 * scale * tol)
    assert float(clean.mean()) == pytest.approx(0.0, abs=0.02)  # clean labels, balanced
    # W's outputs do not depend on whether u is asked for.
    assert torch.equal(draw_test_outputs(cell, 3, train.v, w)[0], pre)
