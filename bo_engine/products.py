"""The Gram-type products a run trains and reports from, accumulated over chunks of d.

Every GD step adds to w_j a combination of the training inputs, W = W(0) + C X, so all the
engine reports follows from C and a few products: G = X X^T, Z0 = W(0) X^T, X v, W(0) v and
W(0) W(0)^T (`RunData`). With x = sqrt(gamma) t v + sqrt(1 - gamma) (N - (N v) v^T), N the
drawn noise g / sqrt(d) and v = g_v / ||g_v||, they follow from N N^T, N g_v, N W(0)^T,
W(0) g_v, W(0) W(0)^T and ||g_v||^2, each a sum over the chunks of d (`draw_run_data`): peak
memory O(n^2 + width n + width^2) plus one chunk's draw, whatever d is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bo_engine.chunks import Checkpoint, addmm_rows, no_checkpoint
from bo_engine.data import TrainSet, column_chunks, labels, noise_chunk, signal_chunk
from bo_engine.model import init_chunk
from bo_engine.spec import Cell


@dataclass(frozen=True)
class RunData:
    """One run's labels and products, float64 on the CPU."""

    y: torch.Tensor  # (n,) observed labels
    clean: torch.Tensor  # (n,) clean labels
    corrupted: torch.Tensor  # (n,) bool
    gram: torch.Tensor  # (n, n) X X^T
    x_v: torch.Tensor  # (n,) X v
    z0: torch.Tensor  # (width, n) W(0) X^T
    w0_v: torch.Tensor  # (width,) W(0) v
    w0_gram: torch.Tensor  # (width, width) W(0) W(0)^T

    @classmethod
    def from_explicit(cls, train: TrainSet, w0: torch.Tensor) -> RunData:
        """The products of an explicit training set and W(0)."""
        x, v = train.x, train.v
        return cls(
            train.y, train.clean, train.corrupted, x @ x.T, x @ v, w0 @ x.T, w0 @ v, w0 @ w0.T
        )


def draw_run_data(cell: Cell, seed: int, check: Checkpoint = no_checkpoint) -> RunData:
    """The run data of (cell, seed), from the same draws as `make_train_set` and
    `init_weights`, one chunk of d at a time; `check()` after each chunk."""
    n, m = cell.n, cell.width
    f64 = torch.float64
    nn, nw, ww = (torch.zeros(a, b, dtype=f64) for a, b in ((n, n), (n, m), (m, m)))
    n_gv, w_gv, gv_gv = torch.zeros(n, dtype=f64), torch.zeros(m, dtype=f64), 0.0
    for k, cols in enumerate(column_chunks(cell.d)):
        noise = noise_chunk(cell, seed, k, cols, check)
        gv = signal_chunk(cell.d, seed, k, cols)
        w0 = init_chunk(cell, seed, k, cols)
        addmm_rows(nn, noise, noise.T, check)
        addmm_rows(nw, noise, w0.T, check)
        ww.addmm_(w0, w0.T)
        n_gv.addmv_(noise, gv)
        w_gv.addmv_(w0, gv)
        gv_gv += float(gv @ gv)
        del noise, w0
        check()
    norm = math.sqrt(gv_gv)
    r, w0_v = n_gv / norm, w_gv / norm  # N v, W(0) v
    y, clean, corrupted = labels(cell, seed)
    signal, spread = math.sqrt(cell.gamma), math.sqrt(1.0 - cell.gamma)
    x_v = signal * clean  # the noise is orthogonal to v
    gram = nn.sub_(torch.outer(r, r)).mul_(spread**2).add_(torch.outer(x_v, x_v))
    xw = nw.sub_(torch.outer(r, w0_v)).mul_(spread).add_(torch.outer(x_v, w0_v))
    return RunData(y, clean, corrupted, gram, x_v, xw.T.contiguous(), w0_v, ww)


@dataclass(frozen=True)
class WeightMoments:
    """What the results need of W = W(0) + C X and of the baseline u = X^T beta."""

    w_gram: torch.Tensor  # (width, width) W W^T
    w_v: torch.Tensor  # (width,) W v
    u_v: float | None = None  # <u, v>
    u_sq: float | None = None  # ||u||^2
    w_u: torch.Tensor | None = None  # (width,) W u

    @classmethod
    def of(cls, data: RunData, c: torch.Tensor, beta: torch.Tensor | None = None) -> WeightMoments:
        """From the products and C (width, n) float64; of u = X^T beta when beta is given."""
        c_z0 = c @ data.z0.T
        w_gram = data.w0_gram + c_z0 + c_z0.T + c @ data.gram @ c.T
        w_v = data.w0_v + c @ data.x_v
        if beta is None:
            return cls(w_gram, w_v)
        g_beta = data.gram @ beta
        w_u = data.z0 @ beta + c @ g_beta
        return cls(w_gram, w_v, float(beta @ data.x_v), float(beta @ g_beta), w_u)

    @classmethod
    def explicit(
        cls, w: torch.Tensor, v: torch.Tensor, u: torch.Tensor | None = None
    ) -> WeightMoments:
        if u is None:
            return cls(w @ w.T, w @ v)
        return cls(w @ w.T, w @ v, float(u @ v), float(u @ u), w @ u)

    def weight_norm(self) -> float:
        return math.sqrt(max(float(self.w_gram.trace()), 0.0))

    def projected_gram(self) -> torch.Tensor:
        """W P W^T, P = I - v v^T."""
        return self.w_gram - torch.outer(self.w_v, self.w_v)

    def noise_norm(self) -> float:
        """||W P||_F."""
        return math.sqrt(max(float(self.projected_gram().trace()), 0.0))
