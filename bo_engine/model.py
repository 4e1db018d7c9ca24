"""The network: f(W, x) = sum_j a_j sigma(<w_j, x>), a_j = +1 (j even) / -1 (j odd), no biases."""

from __future__ import annotations

import torch

from bo_engine.chunks import Checkpoint, no_checkpoint
from bo_engine.data import column_chunks, seeded_generator
from bo_engine.spec import Cell


def outer_weights(width: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """a: (width,), +1 for even j and -1 for odd j; fixed, not trained."""
    a = torch.ones(width, dtype=dtype, device=device)
    a[1::2] = -1
    return a


def leaky_relu(z: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """sigma(z) = max(z, alpha z) for alpha in (0, 1]."""
    return torch.where(z > 0, z, alpha * z)


def network_output(w: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """f(W, x) for W (width, d) and x (N, d): (N,)."""
    a = outer_weights(w.shape[0], w.dtype, w.device)
    return leaky_relu(x @ w.T, alpha) @ a


def init_chunk(cell: Cell, seed: int, chunk: int, cols: slice) -> torch.Tensor:
    """Chunk `chunk` (columns `cols`, `bo_engine.data.column_chunks`) of W(0): (width, cols),
    entries N(0, init_scale^2), float64, from a generator of its own."""
    gen = seeded_generator(
        "init", width=cell.width, d=cell.d, init_scale=cell.init_scale, seed=seed, chunk=chunk
    )
    w = torch.randn(cell.width, cols.stop - cols.start, generator=gen, dtype=torch.float64)
    return w.mul_(cell.init_scale)


def init_weights(cell: Cell, seed: int, check: Checkpoint = no_checkpoint) -> torch.Tensor:
    """W(0): (width, d), entries N(0, init_scale^2), float64 on the CPU; drawn in chunks of
    columns with `check()` between them."""
    chunks = []
    for k, cols in enumerate(column_chunks(cell.d)):
        chunks.append(init_chunk(cell, seed, k, cols))
        check()
    return torch.cat(chunks, 1)
