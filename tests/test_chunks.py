"""Work in row blocks (`bo_engine.chunks`): the same numbers as in one piece, and a checkpoint
between blocks that stops the work."""

from __future__ import annotations

import pytest
import torch

import bo_engine.chunks as chunks
from bo_engine.chunks import Stopped, matmul_rows, normal_row_blocks, randn_rows, row_blocks
from bo_engine.data import make_train_set
from bo_engine.model import init_weights
from bo_engine.spec import JobSpec

pytestmark = pytest.mark.fast

F64 = torch.float64


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few rows, so that small shapes take many of them."""
    monkeypatch.setattr(chunks, "BLOCK_NUMBERS", 1000)
    monkeypatch.setattr(chunks, "BLOCK_WORK", 20_000)


def covers(blocks: list[slice], rows: int) -> bool:
    return [i for b in blocks for i in range(b.start, b.stop)] == list(range(rows))


@pytest.mark.parametrize(
    "rows,per_row,limit,align", [(10, 5, 100, 8), (100, 7, 50, 8), (17, 1, 4, 8)]
)
def test_row_blocks_cover_the_rows_aligned(rows: int, per_row: int, limit: int, align: int) -> None:
    blocks = row_blocks(rows, per_row, limit, align)
    assert covers(blocks, rows)
    assert all(b.start % align == 0 for b in blocks)
    assert all(b.stop - b.start >= align for b in blocks[1:])
    if rows * per_row <= limit:
        assert blocks == [slice(0, rows)]


@pytest.mark.parametrize("cols", [1, 2, 3, 5, 16, 100, 1001])
def test_normal_blocks_are_whole_groups_of_sixteen(small_blocks, cols: int) -> None:
    blocks = normal_row_blocks(203, cols)
    assert covers(blocks, 203)
    assert all((b.stop - b.start) * cols % 16 == 0 for b in blocks[:-1])
    assert (blocks[-1].stop - blocks[-1].start) * cols >= 16


@pytest.mark.parametrize("rows,cols", [(2003, 1), (370, 5), (64, 33), (41, 1001), (1000, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_draw_in_blocks_continues_one_stream(small_blocks, rows, cols, dtype) -> None:
    blocked = randn_rows(rows, cols, torch.Generator().manual_seed(3), dtype, chunks.no_checkpoint)
    whole = torch.randn(rows, cols, generator=torch.Generator().manual_seed(3), dtype=dtype)
    assert len(normal_row_blocks(rows, cols)) > 1
    assert torch.equal(blocked, whole)


@pytest.mark.parametrize("m,k,p", [(203, 50, 203), (17, 300, 40), (64, 10, 7)])
def test_a_product_in_row_blocks_equals_the_whole(small_blocks, m: int, k: int, p: int) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen, dtype=F64), torch.randn(p, k, generator=gen, dtype=F64)
    assert torch.equal(matmul_rows(a, b.T, chunks.no_checkpoint), a @ b.T)


@pytest.mark.parametrize("n,d,width", [(40, 300, 16), (203, 77, 10), (9, 1001, 64)])
def test_data_and_weights_in_blocks_equal_one_piece(monkeypatch, n: int, d: int, width: int):
    cell = JobSpec(n=n, d=d, width=width, gamma=0.3, n_test=10).cells[0]
    whole = make_train_set(cell, 5), init_weights(cell, 5)
    monkeypatch.setattr(chunks, "BLOCK_NUMBERS", 1000)
    blocked = make_train_set(cell, 5), init_weights(cell, 5)
    assert torch.equal(blocked[0].x, whole[0].x) and torch.equal(blocked[0].y, whole[0].y)
    assert torch.equal(blocked[1], whole[1])


def test_a_checkpoint_stops_the_work_after_one_block(small_blocks) -> None:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 1:
            raise Stopped

    cell = JobSpec(n=200, d=300, gamma=0.3, n_test=10).cells[0]
    with pytest.raises(Stopped):
        make_train_set(cell, 0, check)
    assert len(calls) == 2  # stopped at the second of its many blocks
    calls.clear()
    x = torch.ones(200, 300, dtype=F64)
    with pytest.raises(Stopped):
        matmul_rows(x, x.T, check)
    assert len(calls) == 2
