"""Long computations in row blocks of bounded work, with a checkpoint between blocks.

At the largest shapes one Gram product or one data draw alone takes tens of seconds on a core,
too long for a cancel to wait for. Here they run in row blocks of about `BLOCK_WORK` multiply-adds
(or `BLOCK_NUMBERS` random numbers), and a checkpoint between blocks raises `Stopped` once a stop
was asked. Blocking changes no number:

- a product's output rows are the same dot products whichever rows they are computed with, as
  long as each block starts at a multiple of 8 rows (the BLAS then sees the alignment of the
  whole matrix);
- torch's CPU normal sampler draws one uniform per number, in order, and transforms them in groups
  of 16, so blocks of a multiple of 16 numbers continue one stream exactly.

Products and draws no bigger than one block are done in one call, exactly as before. The tests
check both properties (tests/test_chunks.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch

# Multiply-adds per block of a product: about 0.4 s on one core. Smaller blocks have too few
# rows for the BLAS to run at full speed when d is large (2^31: 1.9x slower at n=1000, d=1e5).
BLOCK_WORK = 1 << 33
# Random numbers per block of a draw (with the elementwise work around them, about 0.1 s).
BLOCK_NUMBERS = 1 << 22
# Blocks of a product start at a multiple of this many rows; of a draw, of this many numbers.
PRODUCT_ROW_ALIGN = 8
NORMAL_GROUP = 16


class Stopped(Exception):
    """Raised at a checkpoint once a stop was asked: the work in progress is abandoned."""


Checkpoint = Callable[[], None]


def no_checkpoint() -> None:
    """A checkpoint that never stops."""


def checkpoint(stop: threading.Event) -> Checkpoint:
    """A checkpoint that raises `Stopped` once `stop` is set."""

    def check() -> None:
        if stop.is_set():
            raise Stopped

    return check


def row_blocks(rows: int, per_row: int, limit: int, align: int) -> list[slice]:
    """Consecutive slices of range(rows) of about `limit` / `per_row` rows each, every one
    starting at a multiple of `align` rows and none but the first shorter than `align` rows (a
    short tail joins the block before it); one slice when everything fits in one block."""
    if rows * per_row <= limit:
        return [slice(0, rows)]
    size = max(align, limit // max(per_row, 1) // align * align)
    starts = list(range(0, rows, size))
    if len(starts) > 1 and rows - starts[-1] < align:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], rows], strict=True)]


def matmul_rows(a: torch.Tensor, b: torch.Tensor, check: Checkpoint) -> torch.Tensor:
    """a @ b for a (m, k) and b (k, p), in blocks of rows of a; `check()` after each block."""
    blocks = row_blocks(a.shape[0], a.shape[1] * b.shape[1], BLOCK_WORK, PRODUCT_ROW_ALIGN)
    if len(blocks) == 1:
        out = a @ b
        check()
        return out
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.result_type(a, b), device=a.device)
    for rows in blocks:
        torch.matmul(a[rows], b, out=out[rows])
        check()
    return out


def addmm_rows(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, check: Checkpoint) -> None:
    """out += a @ b in place, for a (m, k) and b (k, p), in blocks of rows of a; `check()` after
    each block."""
    for rows in row_blocks(a.shape[0], a.shape[1] * b.shape[1], BLOCK_WORK, PRODUCT_ROW_ALIGN):
        out[rows].addmm_(a[rows], b)
        check()


def normal_row_blocks(rows: int, cols: int) -> list[slice]:
    """Row blocks of a (rows, cols) normal draw that continue one generator stream exactly (each a
    multiple of 16 numbers) and keep the row alignment of products over them."""
    align = math.lcm(PRODUCT_ROW_ALIGN, NORMAL_GROUP // math.gcd(cols, NORMAL_GROUP))
    return row_blocks(rows, cols, BLOCK_NUMBERS, align)


def randn_rows(
    rows: int, cols: int, gen: torch.Generator, dtype: torch.dtype, check: Checkpoint
) -> torch.Tensor:
    """torch.randn(rows, cols) from `gen`, drawn in row blocks; `check()` after each block."""
    out = torch.empty(rows, cols, dtype=dtype)
    for block in normal_row_blocks(rows, cols):
        torch.randn(block.stop - block.start, cols, generator=gen, dtype=dtype, out=out[block])
        check()
    return out
