"""Full-batch gradient descent on the summed hinge loss, many runs at once.

B runs that share width, alpha and stop rule train as one tensor program (in the Gram form, runs
of any n and d, padded to the largest n). Every GD step adds to w_j a linear
combination of the training inputs, so W(t) = W(0) + C(t) X with C (B, width, n), and the
pre-activations Z = W X^T (B, width, n) follow from

    Gram form:   Z(t+1) = Z(t) + dC G,          G = X X^T (B, n, n)   O(width n^2) a step
    plain form:  W(t+1) = W(t) + dC X, Z = W X^T                      O(width n d) a step

with the same iterates up to rounding. Only points with y_i f(x_i) < 1 move C, so in the Gram form
the update gathers just the active columns of dC and rows of G. Runs that stop are taken out of the
batch at once, so they cost nothing further.

That batched tensor program is how a GPU trains. A CPU is bound by the dispatch of its ~15 small
kernels a step instead, so on a CPU each Gram-form run trains in the compiled loop of
`bo_engine.loop`, the runs of a batch in parallel threads (see `_uses_compiled_loop`).

The gradient of L(W) = sum_i max(0, 1 - y_i f(x_i)) with respect to w_j is
-a_j sum_{i: y_i f_i < 1} y_i sigma'(z_ji) x_i, so one GD step is dC_ji = lr a_j y_i sigma'(z_ji).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bo_engine.chunks import Checkpoint, Stopped, no_checkpoint
from bo_engine.data import TrainSet, make_train_set
from bo_engine.loop import RESYNC_EVERY, train_in_threads
from bo_engine.metrics import (
    fit_metrics,
    gram_weight_norms,
    products_result,
    stop_reason,
    trajectory_point,
)
from bo_engine.model import init_weights, outer_weights
from bo_engine.plan import RunSetup
from bo_engine.products import RunData, draw_run_data
from bo_engine.report import Reporter
from bo_engine.spec import Cell, TheoryRule, uses_gram_form

# A dense Gram update costing less than this many multiply-adds (B m n^2) is cheaper than the
# few extra kernels that gather the active columns (see _step).
ACTIVE_PATH_MIN_WORK = 1 << 20
# The cancel callback is asked at most this often (seconds).
CANCEL_POLL_SECONDS = 0.2


# The aten kernels themselves: the Python wrappers cost as much as the work on small batches.
_leaky_relu = torch._C._nn.leaky_relu
_leaky_relu_backward = torch.ops.aten.leaky_relu_backward.default


@dataclass
class _LiveRuns:
    """The live tensors of the runs still training; row b of each belongs to run ids[b].

    Runs of different n share a Gram-form batch: each is padded to the batch's largest n with
    zero inputs and label 0. `pad` is +inf there, so y f + pad keeps padded points satisfied and
    out of the active set, and they never move C or Z.
    """

    ids: torch.Tensor  # (B,) index into setups
    z0: torch.Tensor  # (B, m, n) pre-activations at init
    z: torch.Tensor  # (B, m, n) current pre-activations
    c: torch.Tensor  # (B, m, n) coefficients: W = W0 + C X
    gram: torch.Tensor | None  # (B, n, n) in the Gram form
    x: torch.Tensor | None  # (B, n, d) in the plain form
    w: torch.Tensor | None  # (B, m, d) in the plain form
    y: torch.Tensor  # (B, n) labels, 0 on padding
    lr_y: torch.Tensor  # (B, n) lr * y
    pad: torch.Tensor  # (B, n) 0 on real points, +inf on padding
    alpha: float  # shared by the batch (part of the shape key)

    def keep(self, rows: torch.Tensor) -> None:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.index_select(0, rows))


def _padded(t: torch.Tensor, size: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the given dims of t up to `size`."""
    widths: list[int] = []
    for dim in reversed(range(t.dim())):
        widths += [0, size - t.shape[dim] if dim in dims else 0]
    return F.pad(t, widths)


def _build(
    setups: list[RunSetup], data: list[TrainSet], w0: list[torch.Tensor], device, dtype
) -> _LiveRuns:
    """The batch from explicit training sets and W(0)."""
    return _from_explicit(setups, data, w0, device, dtype)[1]


def _from_explicit(
    setups: list[RunSetup], trains: list[TrainSet], w0: list[torch.Tensor], device, dtype
) -> tuple[list[RunData], _LiveRuns]:
    """The runs' products and the batch from explicit training sets and W(0); the plain form
    keeps X and W."""
    data = [RunData.from_explicit(t, w) for t, w in zip(trains, w0, strict=True)]
    gram_form = uses_gram_form(setups[0].cell.n, setups[0].cell.d)
    plain = None if gram_form else ([t.x for t in trains], w0)
    return data, _stack(setups, data, device, dtype, plain)


def _stack(
    setups: list[RunSetup],
    data: list[RunData],
    device,
    dtype,
    plain: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
) -> _LiveRuns:
    """The batch from the runs' products; `plain` (their X and W(0)) for the plain form."""

    def stack(tensors: list[torch.Tensor], dims: tuple[int, ...] = ()) -> torch.Tensor:
        padded = [_padded(t, n, dims) for t in tensors]
        return torch.stack(padded).to(device=device, dtype=dtype)

    cells = [s.cell for s in setups]
    n = max(c.n for c in cells)
    y = stack([t.y for t in data], (0,))
    lr = torch.tensor([c.lr for c in cells], device=device, dtype=dtype).view(-1, 1)
    real = stack([torch.ones(c.n) for c in cells], (0,)) > 0
    z0 = stack([t.z0 for t in data], (1,))
    return _LiveRuns(
        ids=torch.arange(len(setups), device=device),
        z0=z0,
        z=z0.clone(),
        c=torch.zeros_like(z0),
        gram=stack([t.gram for t in data], (0, 1)) if plain is None else None,
        x=None if plain is None else stack(plain[0]),
        w=None if plain is None else stack(plain[1]),
        y=y,
        lr_y=lr * y,
        pad=torch.zeros_like(y).masked_fill_(~real, float("inf")),
        alpha=cells[0].alpha,
    )


def _outputs(b: _LiveRuns, a: torch.Tensor) -> torch.Tensor:
    """f (B, n) = a^T sigma(Z): one fused activation and one batched matrix-vector product."""
    return torch.bmm(a.expand(b.z.shape[0], 1, -1), _leaky_relu(b.z, b.alpha)).squeeze(1)


def _update(z: torch.Tensor, signed_coef: torch.Tensor, alpha: float) -> torch.Tensor:
    """dC = signed_coef * sigma'(z), sigma'(z) = 1 if z > 0 else alpha, in one fused kernel.

    This is autograd's own leaky ReLU backward (which also takes alpha at z = 0).
    """
    return _leaky_relu_backward(signed_coef, z, alpha, False)


def _active_columns(yf: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) indices of each run's k smallest y f: its active points (y f < 1) first, then
    inactive ones as padding (their coefficient is 0)."""
    return torch.topk(yf, k, dim=1, largest=False, sorted=False).indices


def _step(b: _LiveRuns, a: torch.Tensor, yf: torch.Tensor) -> None:
    """One GD step for every run in the batch (finished runs were removed before)."""
    active = yf < 1  # (B, n): only these points have a hinge subgradient (never padding)
    coef = b.lr_y * active  # (B, n): lr y_i on the active set, else 0
    n = active.shape[1]
    if b.gram is not None and b.z.numel() * n >= ACTIVE_PATH_MIN_WORK:
        k = int(active.sum(1).max())
        if 2 * k < n:
            # Work on the active columns only: dC[:, :, A] and Z += dC[:, :, A] G[A, :].
            cols = _active_columns(yf, k)  # (B, k)
            cols_m = cols[:, None, :].expand(-1, b.z.shape[1], -1)  # (B, m, k)
            signed = a[:, None] * torch.gather(coef, 1, cols)[:, None, :]  # (B, m, k)
            dc_a = _update(torch.gather(b.z, 2, cols_m), signed, b.alpha)
            b.c.scatter_add_(2, cols_m, dc_a)
            g_a = torch.gather(b.gram, 1, cols[:, :, None].expand(-1, -1, n))  # (B, k, n)
            b.z.baddbmm_(dc_a, g_a)
            return
    dc = _update(b.z, a[:, None] * coef[:, None, :], b.alpha)  # (B, m, n)
    b.c += dc
    if b.gram is None:
        b.w.baddbmm_(dc, b.x)
        b.z = b.w @ b.x.transpose(1, 2)
    else:
        b.z.baddbmm_(dc, b.gram)


def _resync(b: _LiveRuns) -> None:
    if b.gram is not None:
        b.z = b.z0 + b.c @ b.gram


def _weight_norms(b: _LiveRuns, w0_sq: torch.Tensor) -> torch.Tensor:
    """||W||_F per run of the batch."""
    if b.w is not None:
        return b.w.flatten(1).norm(dim=1)
    return gram_weight_norms(w0_sq[b.ids], b.c, b.z0, b.gram)


def _uses_compiled_loop(device: torch.device, cell: Cell) -> bool:
    """A CPU trains Gram-form runs in the compiled loop; a GPU, and the plain form, batched."""
    return device.type == "cpu" and uses_gram_form(cell.n, cell.d)


@torch.inference_mode()  # no autograd bookkeeping: fewer dispatcher layers on every small op
def train_batch(
    setups: list[RunSetup],
    *,
    device: torch.device,
    dtype: torch.dtype,
    record_every: int | None,
    max_margin_baseline: bool,
    theory: TheoryRule,
    on_run_done: Callable[[RunSetup, dict[str, Any]], None],
    on_runs_done: Callable[[int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    cancel_poll_seconds: float | None = None,
) -> bool:
    """Train all runs to their stop rule; report each via `on_run_done`. True if cancelled.

    The runs must share a shape key (`Cell.shape_key`): one width, alpha and stop rule.
    `on_run_done`, `on_runs_done(k)` (k more runs finished) and `should_cancel()` (asked at most
    every `cancel_poll_seconds`, default CANCEL_POLL_SECONDS) are called on this thread only.
    """
    keys = {s.cell.shape_key() for s in setups}
    if len(keys) != 1:
        raise ValueError(f"runs of one batch must share a shape key; got {sorted(map(str, keys))}")

    def result_of(setup, data, c, f, steps, reason, trajectory, check) -> dict[str, Any]:
        n = setup.cell.n
        return products_result(
            setup.cell,
            setup.seed,
            data,
            c[:, :n],
            f[:n],
            steps,
            reason,
            # A cancelled run skips the baseline (max_margin null): it would hold the cancel up.
            max_margin_baseline=max_margin_baseline and reason != "cancelled",
            rule=theory,
            trajectory=trajectory,
            check=check,
        )

    poll = CANCEL_POLL_SECONDS if cancel_poll_seconds is None else cancel_poll_seconds
    reporter = Reporter(result_of, on_run_done, on_runs_done, should_cancel, poll)
    if _uses_compiled_loop(device, setups[0].cell):
        return train_in_threads(setups, dtype=dtype, record_every=record_every, reporter=reporter)
    return _train_batched(
        setups, device=device, dtype=dtype, record_every=record_every, reporter=reporter
    )


def _prepare(
    setups: list[RunSetup], device, dtype, check: Checkpoint
) -> tuple[list[RunData], _LiveRuns]:
    """The runs' products and the batch: the Gram form from products accumulated over chunks of
    d, the plain form (d well below n) from X and W(0) formed whole."""
    cell = setups[0].cell
    if uses_gram_form(cell.n, cell.d):
        data = [draw_run_data(s.cell, s.seed, check) for s in setups]
        return data, _stack(setups, data, device, dtype)
    trains = [make_train_set(s.cell, s.seed, check) for s in setups]
    w0 = [init_weights(s.cell, s.seed, check) for s in setups]
    return _from_explicit(setups, trains, w0, device, dtype)


def _train_batched(
    setups: list[RunSetup],
    *,
    device: torch.device,
    dtype: torch.dtype,
    record_every: int | None,
    reporter: Reporter,
) -> bool:
    """All runs as one batched tensor program on `device`, stepped in lockstep. A cancel while
    the data and products are built ends the batch with no run reported."""
    try:
        data, b = _prepare(setups, device, dtype, reporter.check)
    except Stopped:
        return True
    a = outer_weights(setups[0].cell.width, dtype, device)
    w0_sq = torch.stack([t.w0_gram.trace() for t in data]).to(device=device, dtype=dtype)
    trajectories: list[list[dict[str, float]] | None] = [
        [] if record_every else None for _ in setups
    ]
    max_steps = [s.cell.max_steps for s in setups]  # per row of the batch, kept in step
    step = 0
    cancelled = False

    def finish(rows: list[int], f: torch.Tensor, reasons: list[str]) -> None:
        finished = []
        for row, reason in zip(rows, reasons, strict=True):
            i = int(b.ids[row])
            run = reporter.result_of(
                setups[i], data[i], b.c[row], f[row], step, reason, trajectories[i], no_checkpoint
            )
            finished.append((setups[i], run))
        reporter.report(finished)

    rule = setups[0].cell.stop  # one stop rule per batch (part of the shape key)
    while b.ids.numel():
        f = _outputs(b, a)
        yf = torch.addcmul(b.pad, b.y, f)  # y f; padded points +inf: satisfied, never active
        if record_every and step % record_every == 0:
            norms = _weight_norms(b, w0_sq).tolist()
            for row, i in enumerate(b.ids.tolist()):
                n = setups[i].cell.n
                fit = fit_metrics(b.y[row, :n], f[row, :n])
                trajectories[i].append(trajectory_point(step, fit, norms[row]))
        # One reduction and one small copy decide every run's stop: min_i y_i f_i.
        margins = yf.amin(1).tolist()
        reached = [m >= 1 if rule == "zero_loss" else m > 0 for m in margins]
        out_of_steps = [step >= m for m in max_steps]
        cancel_now = reporter.cancel_requested()
        rows = [r for r in range(len(margins)) if cancel_now or reached[r] or out_of_steps[r]]
        if rows:
            reasons = [stop_reason(reached[r], rule, out_of_steps[r], cancel_now) for r in rows]
            finish(rows, f, reasons)
            if cancel_now:
                cancelled = True
                break
            done = set(rows)
            keep = [r for r in range(len(margins)) if r not in done]
            if not keep:
                break
            kept = torch.tensor(keep, device=device)
            b.keep(kept)
            yf = yf.index_select(0, kept)
            max_steps = [max_steps[r] for r in keep]
        _step(b, a, yf)
        step += 1
        if step % RESYNC_EVERY == 0:
            _resync(b)
    return cancelled
