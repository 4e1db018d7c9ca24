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


def _separable(yx: torch.Tensor) -> bool:
    """Is there a w with y_i <w, x_i> >= 1 for all i? An LP feasibility problem (HiGHS)."""
    n, d = yx.shape
    lp = linprog(
        np.zeros(d), A_ub=-yx.numpy(), b_ub=-np.ones(n), bounds=[(None, None)] * d, method="highs"
    )
    return lp.status == 0


def max_margin_classifier(
    x: torch.Tensor, y: torch.Tensor, check: Checkpoint = no_checkpoint
) -> torch.Tensor | None:
    """w* (d,) with y_i <w*, x_i> >= 1 and the least norm, or None if no such w exists.

    x (n, d) and y (n,) in {-1, +1}, float64 on the CPU. `check()` is called between the
    stages (and the blocks of Q, and L-BFGS-B's iterations), so that a stop ends the solve.
    """
    yx = y[:, None] * x
    q = matmul_rows(yx, yx.T, check)

    def primal(lam: torch.Tensor | None) -> torch.Tensor | None:
        if lam is None:
            return None
        w = yx.T @ lam
        feasible = bool(torch.isfinite(w).all()) and float((yx @ w).min()) >= 1 - FEASIBILITY_TOL
        return w if feasible else None

    # NNLS is exact when Q is well conditioned; near d = n it may not be, so L-BFGS-B backs it
    # up. A positive definite Q means independent x_i, separable under any labels; otherwise an
    # LP decides first, since without a separator the dual has no minimum to find.
    lam = _dual_nnls(q)
    check()
    w = primal(lam)
    if w is None and (lam is not None or _separable(yx)):
        check()
        w = primal(_dual_lbfgs(q, check))
    return w
