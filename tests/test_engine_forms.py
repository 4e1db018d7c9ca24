"""The Gram (dual) form and the plain form produce the same iterates (float64, 200 steps).

Both forms are forced on the same runs by setting the batch's `gram` or its `x`/`w`, then
stepped with `_step` directly, so no stop rule intervenes. The Gram form's active-column update
(taken when 2k < n for k the most active points of any run) is checked against the plain form's
dense update, and the run shapes cover d < n, d = n and d > n.
"""

from __future__ import annotations

import pytest
import torch

import bo_engine.train as train_mod
from bo_engine.data import make_train_set
from bo_engine.model import init_weights, outer_weights
from bo_engine.spec import JobSpec
from bo_engine.train import RunSetup, _build, _LiveRuns, _outputs, _resync, _step, _weight_norms

pytestmark = pytest.mark.fast

F64 = torch.float64
CPU = torch.device("cpu")
STEPS = 200


def build(n: int, d: int, width: int, seeds: int, form: str, lr_factor: float = 4.0):
    cells = JobSpec(n=n, d=d, width=width, gamma=3 / n, n_test=1).cells
    cell = cells[0].model_copy(update={"lr": lr_factor * cells[0].lr})
    setups = [RunSetup(0, cell, s) for s in range(seeds)]
    data = [make_train_set(cell, s) for s in range(seeds)]
    w0 = [init_weights(cell, s) for s in range(seeds)]
    b = _build(setups, data, w0, CPU, F64)
    x = torch.stack([t.x for t in data])
    if form == "gram":
        b.gram, b.x, b.w = x @ x.transpose(1, 2), None, None
    else:
        b.gram, b.x, b.w = None, x, torch.stack(w0)
    return b, data, w0, outer_weights(width, F64), cell


@pytest.fixture
def active_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Let the active-column update apply at these tiny sizes (the engine may keep small batches
    on the dense update), and count the steps that take it: one `_active_columns` call each."""
    monkeypatch.setattr(train_mod, "ACTIVE_PATH_MIN_WORK", 0)
    calls: list[int] = []
    real = train_mod._active_columns

    def spy(active: torch.Tensor, k: int) -> torch.Tensor:
        calls.append(k)
        return real(active, k)

    monkeypatch.setattr(train_mod, "_active_columns", spy)
    return calls


def run_steps(b, a, steps: int) -> None:
    for _ in range(steps):
        _step(b, a, b.y * _outputs(b, a))


@pytest.mark.parametrize("width", [4, 16])
@pytest.mark.parametrize("n,d", [(24, 8), (24, 24), (24, 60), (16, 3)])
def test_gram_and_plain_iterates_agree(active_path, n: int, d: int, width: int) -> None:
    gram, data, w0, a, _ = build(n, d, width, seeds=3, form="gram")
    plain, _, _, _, _ = build(n, d, width, seeds=3, form="plain")
    run_steps(gram, a, STEPS)
    # Both update paths of the Gram form were exercised over the run.
    assert 0 < len(active_path) < STEPS
    calls = len(active_path)
    run_steps(plain, a, STEPS)
    assert len(active_path) == calls  # the plain form never gathers active columns
    torch.testing.assert_close(gram.c, plain.c, rtol=0, atol=1e-10 * float(plain.c.abs().max()))
    torch.testing.assert_close(gram.z, plain.z, rtol=0, atol=1e-10)
    for row, (t, w) in enumerate(zip(data, w0, strict=True)):
        # W = W0 + C X: the Gram form's weights equal the plain form's explicit W.
        torch.testing.assert_close(w + gram.c[row] @ t.x, plain.w[row], rtol=0, atol=1e-10)
    # Training did something: the weights moved well away from their initial values.
    assert float((plain.w - torch.stack(w0)).norm()) > float(torch.stack(w0).norm())


def test_active_column_update_equals_dense_update(active_path) -> None:
    """One step from the same state, once through the active columns, once densely."""
    sparse, data, _, a, cell = build(30, 40, 8, seeds=4, form="gram")
    run_steps(sparse, a, 150)  # far enough that few points are active, differently per run
    yf = sparse.y * _outputs(sparse, a)
    active = (yf < 1).sum(1)
    assert 2 * int(active.max()) < yf.shape[1]  # the active-column path applies
    assert int(active.min()) < int(active.max())  # runs are padded with inactive columns
    copies = {k: v.clone() if torch.is_tensor(v) else v for k, v in vars(sparse).items()}
    dense = _LiveRuns(**copies)
    calls = len(active_path)
    _step(sparse, a, yf)
    assert len(active_path) == calls + 1  # this step took the active-column path
    # The dense update, written out: dC_ji = lr a_j y_i sigma'(z_ji) on active points.
    y = torch.stack([t.y for t in data])
    slope = torch.where(dense.z > 0, 1.0, torch.tensor(cell.alpha, dtype=F64))
    dc = cell.lr * a[:, None] * slope * (y * (yf < 1))[:, None, :]
    torch.testing.assert_close(sparse.c, dense.c + dc, rtol=0, atol=1e-14)
    torch.testing.assert_close(sparse.z, dense.z + dc @ dense.gram, rtol=0, atol=1e-13)


def test_resync_and_gram_weight_norm_identity() -> None:
    b, data, w0, a, _ = build(20, 30, 8, seeds=3, form="gram")
    run_steps(b, a, 120)
    z_incremental = b.z.clone()
    _resync(b)
    torch.testing.assert_close(b.z, z_incremental, rtol=0, atol=1e-12)
    explicit = torch.stack([(w + c @ t.x).norm() for w, c, t in zip(w0, b.c, data, strict=True)])
    w0_sq = torch.stack([w.pow(2).sum() for w in w0])
    torch.testing.assert_close(_weight_norms(b, w0_sq), explicit, rtol=1e-12, atol=0)
    # After a batch shrinks, norms still follow the right runs (w0_sq is indexed by run id).
    b.keep(torch.tensor([2, 0]))
    torch.testing.assert_close(_weight_norms(b, w0_sq), explicit[[2, 0]], rtol=1e-12, atol=0)
