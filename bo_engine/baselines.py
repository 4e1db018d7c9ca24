"""The hard-margin linear baseline: the max-margin classifier w* through the origin.

min ||w|| s.t. y_i <w, x_i> >= 1. Its dual, min_{lam >= 0} 1/2 lam^T Q lam - 1^T lam with
Q = (y y^T) * G, is a non-negative least-squares problem once Q = L L^T: with A = L^T and
b = L^{-1} 1 the dual objective is 1/2 ||A lam - b||^2 - 1/2 ||b||^2. scipy's Lawson-Hanson NNLS
solves that exactly in finitely many steps. When Q is singular or badly conditioned (d near or
below n), scipy's L-BFGS-B solves the bound-constrained dual directly, and the primal
constraints decide separability. Linear algebra runs in torch (float64) so that it shares torch's
thread pool instead of fighting it with a second BLAS pool.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linprog, minimize, nnls

from bo_engine.chunks import Checkpoint, matmul_rows, no_checkpoint

FEASIBILITY_TOL = 1e-6


def _dual_nnls(q: torch.Tensor) -> torch.Tensor | None:
    chol, info = torch.linalg.cholesky_ex(q)
    if int(info):
        return None
    ones = torch.ones(q.shape[0], 1, dtype=q.dtype)
    b = torch.linalg.solve_triangular(chol, ones, upper=False).squeeze(1)
    lam, _ = nnls(chol.T.numpy(), b.numpy(), maxiter=50 * q.shape[0])
    return torch.from_numpy(lam)


def _dual_lbfgs(q: torch.Tensor, check: Checkpoint) -> torch.Tensor:
    q_np = q.numpy()

    def objective(lam: np.ndarray) -> tuple[float, np.ndarray]:
        q_lam = q_np @ lam
        return 0.5 * lam @ q_lam - lam.sum(), q_lam - 1.0

    res = minimize(
        objective,
        np.zeros(q.shape[0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * q.shape[0],
        options={"maxiter": 20_000, "ftol": 1e-15, "gtol": 1e-10},
        callback=lambda _: check(),
    )
    return torch.from_numpy(res.x)


def _separable(q: torch.Tensor) -> bool:
    """Is there a w with y_i <w, x_i> >= 1 for all i? Such a w may be taken in the span of the
    x_i, w = sum_i beta_i y_i x_i, so: is there a beta with Q beta >= 1? An LP feasibility
    problem (HiGHS) in n variables, whatever d."""
    n = q.shape[0]
    lp = linprog(
        np.zeros(n), A_ub=-q.numpy(), b_ub=-np.ones(n), bounds=[(None, None)] * n, method="highs"
    )
    return lp.status == 0


def max_margin_dual(
    gram: torch.Tensor, y: torch.Tensor, check: Checkpoint = no_checkpoint
) -> torch.Tensor | None:
    """beta (n,) with w* = X^T beta the least-norm w with y_i <w, x_i> >= 1, or None if there
    is no such w; from G = X X^T (n, n) and y (n,) in {-1, +1}, float64 on the CPU.

    `check()` is called between the stages (and L-BFGS-B's iterations), so that a stop ends
    the solve.
    """
    q = y[:, None] * gram * y[None, :]

    def primal(lam: torch.Tensor | None) -> torch.Tensor | None:
        if lam is None:
            return None
        margins = q @ lam  # y_i <w, x_i> of w = sum_i lam_i y_i x_i
        feasible = (
            bool(torch.isfinite(margins).all()) and float(margins.min()) >= 1 - FEASIBILITY_TOL
        )
        return y * lam if feasible else None

    # NNLS is exact when Q is well conditioned; near d = n it may not be, so L-BFGS-B backs it
    # up. A positive definite Q means independent x_i, separable under any labels; otherwise an
    # LP decides first, since without a separator the dual has no minimum to find.
    check()
    lam = _dual_nnls(q)
    check()
    beta = primal(lam)
    if beta is None and (lam is not None or _separable(q)):
        check()
        beta = primal(_dual_lbfgs(q, check))
    return beta


def max_margin_classifier(
    x: torch.Tensor, y: torch.Tensor, check: Checkpoint = no_checkpoint
) -> torch.Tensor | None:
    """w* (d,) with y_i <w*, x_i> >= 1 and the least norm, or None if no such w exists; x (n, d)
    and y (n,) in {-1, +1}, float64 on the CPU (`max_margin_dual` on x x^T)."""
    beta = max_margin_dual(matmul_rows(x, x.T, check), y, check)
    return None if beta is None else x.T @ beta
