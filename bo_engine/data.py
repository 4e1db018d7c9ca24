"""The data model of the paper: a signal direction v, noisy labels, inputs with signal share gamma.

Every random draw comes from a CPU `torch.Generator` seeded by a stable hash of exactly the
parameters that draw depends on, so the data of (cell, seed) is the same on every device and in
every grid that contains the cell (the basis of a shared result cache).

The d coordinates are drawn in chunks of CHUNK_COLUMNS, each chunk's numbers (of v, of the
inputs' noise, of W(0)) from a generator of its own, a pure function of (cell, seed, chunk). So the
engine never needs x whole: `draw_run_data` accumulates the products it trains and reports from
(`RunData`) chunk by chunk, in O(n^2 + width n) memory plus one chunk, whatever d is, and
`make_train_set` forms the same x explicitly (the plain form, and tests).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch

from bo_engine.chunks import Checkpoint, no_checkpoint, normal_row_blocks, randn_rows
from bo_engine.spec import Cell

# Coordinates per chunk of the draw. Part of the data model: changing it changes every draw.
CHUNK_COLUMNS = 4096


def seeded_generator(stream: str, **params: object) -> torch.Generator:
    """A generator whose seed is a stable hash of a stream name and the parameters it uses."""
    key = json.dumps({"stream": stream, **params}, sort_keys=True).encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(seed)


@dataclass(frozen=True)
class TrainSet:
    """Training data of one run, float64 on the CPU."""

    x: torch.Tensor  # (n, d) inputs
    y: torch.Tensor  # (n,) observed labels in {-1, +1}
    clean: torch.Tensor  # (n,) clean labels t
    corrupted: torch.Tensor  # (n,) bool, y != t
    v: torch.Tensor  # (d,) unit signal direction


def column_chunks(d: int) -> list[slice]:
    """The chunks of the d coordinates: CHUNK_COLUMNS each, the last one shorter."""
    return [slice(lo, min(lo + CHUNK_COLUMNS, d)) for lo in range(0, d, CHUNK_COLUMNS)]


def signal_chunk(d: int, seed: int, chunk: int, cols: slice) -> torch.Tensor:
    """Chunk `chunk` of g_v ~ N(0, I_d), the unnormalized signal direction."""
    gen = seeded_generator("v", d=d, seed=seed, chunk=chunk)
    return torch.randn(cols.stop - cols.start, generator=gen, dtype=torch.float64)


def noise_chunk(
    cell: Cell, seed: int, chunk: int, cols: slice, check: Checkpoint = no_checkpoint
) -> torch.Tensor:
    """Chunk `chunk` of g / sqrt(d), g ~ N(0, I) (n, d): the inputs' noise before projection.
    Drawn in float32 (four times faster on a CPU than float64), in row blocks with `check()`
    between them (`bo_engine.chunks`: the same numbers as in one piece), then used in float64."""
    gen = seeded_generator("noise", n=cell.n, d=cell.d, seed=seed, chunk=chunk)
    g = randn_rows(cell.n, cols.stop - cols.start, gen, torch.float32, check)
    return g.double().div_(math.sqrt(cell.d))


def signal_direction(d: int, seed: int) -> torch.Tensor:
    """v: uniform on the unit sphere of R^d."""
    g = torch.cat([signal_chunk(d, seed, k, cols) for k, cols in enumerate(column_chunks(d))])
    return g / g.norm()


def inputs(
    clean: torch.Tensor,
    v: torch.Tensor,
    gamma: float,
    gen: torch.Generator,
    check: Checkpoint = no_checkpoint,
) -> torch.Tensor:
    """x = sqrt(gamma) t v + sqrt(1 - gamma) xi, xi = g / sqrt(d) projected orthogonally to v.

    Built in row blocks (`bo_engine.chunks`: the same numbers as in one piece), with `check()`
    between blocks; each block's temporaries are the only memory beyond x itself.
    """
    n, d = clean.shape[0], v.shape[0]
    x = torch.empty(n, d, dtype=torch.float64)
    for rows in normal_row_blocks(n, d):
        # Drawn in float32 (four times faster on a CPU than float64), then used in float64.
        g = torch.randn(rows.stop - rows.start, d, generator=gen, dtype=torch.float32)
        xi = g.double() / math.sqrt(d)
        xi -= torch.outer(xi @ v, v)
        x[rows] = math.sqrt(gamma) * clean[rows, None] * v[None, :] + math.sqrt(1.0 - gamma) * xi
        check()
    return x


def random_labels(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1


def labels(cell: Cell, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(observed y, clean t, corrupted) of the n training points."""
    gen = seeded_generator(
        "train",
        n=cell.n,
        d=cell.d,
        gamma=cell.gamma,
        corruption_rate=cell.corruption_rate,
        num_corrupt=cell.num_corrupt,
        seed=seed,
    )
    clean = random_labels(cell.n, gen)
    if cell.num_corrupt is not None:
        corrupted = torch.zeros(cell.n, dtype=torch.bool)
        corrupted[torch.randperm(cell.n, generator=gen)[: cell.num_corrupt]] = True
    else:
        corrupted = torch.rand(cell.n, generator=gen, dtype=torch.float64) < cell.corruption_rate
    return torch.where(corrupted, -clean, clean), clean, corrupted


def make_train_set(cell: Cell, seed: int, check: Checkpoint = no_checkpoint) -> TrainSet:
    """The training set of (cell, seed), x formed whole (O(n d) memory); `check()` between
    chunks. x = sqrt(gamma) t v + sqrt(1 - gamma) xi, xi = g / sqrt(d) projected orthogonally
    to v."""
    y, clean, corrupted = labels(cell, seed)
    noise = []
    for k, cols in enumerate(column_chunks(cell.d)):
        noise.append(noise_chunk(cell, seed, k, cols, check))
    xi = torch.cat(noise, 1)
    v = signal_direction(cell.d, seed)
    xi -= torch.outer(xi @ v, v)
    x = xi.mul_(math.sqrt(1.0 - cell.gamma)).add_(torch.outer(math.sqrt(cell.gamma) * clean, v))
    return TrainSet(x, y, clean, corrupted, v)


def make_test_set(cell: Cell, seed: int, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_test (n_test, d), clean labels (n_test,)): fresh points, labels never corrupted.

    The explicit reference: the engine draws the test outputs directly (`draw_test_outputs`),
    and the tests check that both follow the same law.
    """
    gen = seeded_generator("test", d=cell.d, gamma=cell.gamma, n_test=cell.n_test, seed=seed)
    clean = random_labels(cell.n_test, gen)
    return inputs(clean, v, cell.gamma, gen), clean


def draw_test_outputs(
    cell: Cell, seed: int, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`draw_test_outputs_of` for an explicit W (width, d) and u (d,)."""
    w_v = w @ v
    w_p = w - torch.outer(w_v, v)
    if u is None:
        return draw_test_outputs_of(cell, seed, w_v, w_p @ w_p.T)
    u_v = float(u @ v)
    u_p = u - u_v * v
    return draw_test_outputs_of(cell, seed, w_v, w_p @ w_p.T, (u_v, float(u_p @ u_p), w_p @ u_p))


def draw_test_outputs_of(
    cell: Cell,
    seed: int,
    w_v: torch.Tensor,
    wpw: torch.Tensor,
    u: tuple[float, float, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Pre-activations W x (n_test, width) and linear outputs <u, x> (n_test,) on n_test fresh
    clean-label test points, drawn exactly without forming the points, from W v (width,),
    W P W^T (width, width) and, for u, (<u, v>, ||P u||^2, W P u).

    For x = sqrt(gamma) t v + sqrt(1 - gamma) P g / sqrt(d) (P = I - v v^T, g ~ N(0, I_d)),
    W x = sqrt(gamma) t (W v) + sqrt(1 - gamma) L h with L L^T = W P W^T / d and h ~ N(0, I_m):
    the same joint law as `make_test_set` followed by x @ W.T, at O(n_test width) instead of
    O(n_test d) random numbers. <u, x> is drawn jointly (the last row of the Cholesky factor of
    [W; u] P [W; u]^T / d) from one more column of h, which is always drawn, so W's outputs do
    not depend on whether u is asked for. Float64 on the CPU.
    """
    gen = seeded_generator(
        "test-outputs", d=cell.d, gamma=cell.gamma, n_test=cell.n_test, seed=seed
    )
    clean = random_labels(cell.n_test, gen)
    m, d = w_v.shape[0], cell.d
    h = torch.randn(cell.n_test, m + 1, generator=gen, dtype=torch.float32).double()
    signal, noise = math.sqrt(cell.gamma) * clean[:, None], math.sqrt(1.0 - cell.gamma)
    cov = wpw / d
    # d <= width makes W P W^T singular: a jitter far below float64 resolution of the outputs.
    jitter = 1e-12 * float(cov.diagonal().mean()) + 1e-300
    chol = torch.linalg.cholesky(cov + jitter * torch.eye(m, dtype=cov.dtype))
    pre = signal * w_v + noise * (h[:, :m] @ chol.T)
    if u is None:
        return pre, None, clean
    u_v, up_sq, wp_up = u
    cross = torch.linalg.solve_triangular(chol, (wp_up / d)[:, None], upper=False).squeeze(1)
    rest = math.sqrt(max(up_sq / d - float(cross @ cross), 0.0))
    lin = signal.squeeze(1) * u_v + noise * (h[:, :m] @ cross + rest * h[:, m])
    return pre, lin, clean
