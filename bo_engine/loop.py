"""Training on a CPU: each run's gradient descent in a compiled loop, the runs in threads.

On a CPU the batched tensor step of `bo_engine.train` is bound by dispatch, not arithmetic: about
15 small kernels at a few microseconds each, whatever the batch size, and the slowest run of a
batch alone takes thousands of dependent steps. Here one numba-compiled loop nest does a whole
step (about 10 us at n = 150, width 64, float32, against 70-90 us for the tensor step), and the
runs of a batch train in parallel threads (`train_in_threads`), since the kernel releases the
GIL.

One step, with A = {i : y_i f_i < 1} the active set and g_i = lr y_i G_i (G_i row i of the Gram
matrix G = X X^T), is the Gram form of the module docstring of `bo_engine.train`:

    dC_ji = lr y_i a_j sigma'(z_ji)                                for i in A
    dZ_j  = a_j sum_{i in A} sigma'(z_ji) g_i
          = a_j (alpha u + (1 - alpha) s_j)        u = sum_{i in A} g_i, s_j = sum_{i in P_j} g_i

with P_j = {i in A : z_ji > 0}. With a small step size A changes in a few points from one step to
the next, mostly points at the hinge that leave and re-enter it, and P_j within A hardly changes,
so the sums are kept from step to step and adjusted by the rows g_i of the points that change. A
point at the hinge is one the network fits: z_ji > 0 exactly on the rows j whose a_j has the sign
of y_i, save a few (bench/churn.py at n = 1600: 30-65 points enter or leave A a step, in about
half of the P_j each, with 4-91 exceptions among them in all). So s_j is kept as u_{a_j}, the sum
over the points of A of label sign(a_j), plus e_j, the sum over row j's exceptions (+g_i where
z_ji > 0 > a_j y_i, -g_i where z_ji <= 0 < a_j y_i): a point that enters or leaves A adds one row
of G to u_+ or u_-, and one to each e_j it is an exception of, instead of one to each of the half
of the s_j it is in. A step costs O(width n) plus n per change. The sums are rebuilt exactly
(from empty sets) at every resync of Z, so their rounding cannot drift. The same iterates as the
tensor step, up to rounding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bo_engine.chunks import Checkpoint, Stopped, checkpoint, matmul_rows, no_checkpoint
from bo_engine.metrics import (
    fit_metrics,
    gram_weight_norms,
    stop_reason,
    trajectory_point,
)
from bo_engine.model import outer_weights
from bo_engine.plan import RunSetup
from bo_engine.products import draw_run_data
from bo_engine.report import Reporter

# Recompute Z from C this often (in steps) so that rounding in the incremental update cannot
# drift.
RESYNC_EVERY = 1000
# Runs of at least this many points keep their sums from step to step (`gd_steps`); smaller ones
# re-sum the smaller side of each row's active set every step (`gd_steps_direct`), which does
# less bookkeeping: at n = 200 the kept sums take 1-1.5x as long, from n = 300 on they are faster
# (bench/loop_paths.py, d = 2n, gamma = 5/n, two seeds, float32: 1.4x at 300, 1.7x at 400, 2.1x
# at 600).
INCREMENTAL_MIN_N = 300
# The loop returns to Python about this often (seconds), to notice a stop: the steps of each call
# are paced from the time the last call took (`next_budget`), whatever a step costs.
CALL_SECONDS = 0.1


@numba.njit(nogil=True, cache=True)
def outputs(z, a, alpha, f):  # pragma: no cover (compiled)
    """f (n,) = a^T sigma(Z), summed over rows in order."""
    m, n = z.shape
    f[:] = 0
    for j in range(m):
        aj = a[j]
        for i in range(n):
            zji = z[j, i]
            f[i] += aj * (zji if zji > 0 else alpha * zji)


@numba.njit(nogil=True, cache=True)
def stop_reached(margin, zero_loss):  # pragma: no cover (compiled)
    """The stop rule on min_i y_i f_i: >= 1 for `zero_loss`, else > 0 (zero train error)."""
    return margin >= 1 if zero_loss else margin > 0


@numba.njit(nogil=True, cache=True)
def active_set(y, f, active):  # pragma: no cover (compiled)
    """A = {i : y_i f_i < 1} into active[:k]; returns (k, min_i y_i f_i)."""
    k = 0
    margin = np.inf
    for i in range(y.shape[0]):
        yf = y[i] * f[i]
        margin = min(margin, yf)
        if yf < 1:
            active[k] = i
            k += 1
    return k, margin


@numba.njit(nogil=True, cache=True)
def add_row(target, coef, gram, i):  # pragma: no cover (compiled)
    """target += coef * G_i."""
    for col in range(target.shape[0]):
        target[col] += coef * gram[i, col]


@numba.njit(nogil=True, cache=True)
def update_active(
    u_pos, u_neg, in_a, gram, lr_y, active, k, leaving
):  # pragma: no cover (compiled)
    """Mark A = active[:k] in in_a and make u_pos, u_neg the sums of g_i over its points of label
    +1 and -1, by its changes or afresh (whichever adds fewer rows of G); returns how many points
    left A, listed in `leaving`."""
    n = in_a.shape[0]
    changes, gone, t = 0, 0, 0
    for i in range(n):
        now = t < k and active[t] == i
        t += now
        if now != in_a[i]:
            changes += 1
            if not now:
                leaving[gone] = i
                gone += 1
    if changes > k:
        u_pos[:] = 0
        u_neg[:] = 0
        in_a[:] = False
        for t in range(k):
            i = active[t]
            add_row(u_pos if lr_y[i] > 0 else u_neg, lr_y[i], gram, i)
            in_a[i] = True
        return gone
    for t in range(gone):
        i = leaving[t]
        add_row(u_pos if lr_y[i] > 0 else u_neg, -lr_y[i], gram, i)
        in_a[i] = False
    for t in range(k):
        i = active[t]
        if not in_a[i]:
            add_row(u_pos if lr_y[i] > 0 else u_neg, lr_y[i], gram, i)
            in_a[i] = True
    return gone


@numba.njit(nogil=True, cache=True)
def exception(z_ji, aj, lr_y_i):  # pragma: no cover (compiled)
    """Point i's coefficient in e_j (module docstring): +1 if z_ji > 0 > a_j y_i, -1 if
    z_ji <= 0 < a_j y_i, else 0."""
    return (1 if z_ji > 0 else 0) - (1 if aj * lr_y_i > 0 else 0)


@numba.njit(nogil=True, cache=True)
def update_row(
    j, z, c, gram, lr_y, aj, alpha, active, k, leaving, gone, e, in_e
):  # pragma: no cover (compiled)
    """Row j's step: dC_j on A, and e_j the sum over row j's exceptions in A, their coefficients
    in in_e[j] (0 for every other point), by their changes or afresh, whichever adds fewer rows
    of G. A coefficient only ever moves by 1: it is 0 or -1 where a_j y_i > 0, 0 or +1 else."""
    changes, count = 0, 0
    for t in range(gone):
        changes += in_e[j, leaving[t]] != 0
    for t in range(k):
        i = active[t]
        c[j, i] += aj * lr_y[i] if z[j, i] > 0 else aj * alpha * lr_y[i]
        want = exception(z[j, i], aj, lr_y[i])
        count += want != 0
        changes += want != in_e[j, i]
    if changes == 0:  # most rows, most steps: the points that moved are none of theirs
        return
    afresh = changes > count
    if afresh:
        e[j] = 0
    for t in range(gone):
        i = leaving[t]
        if in_e[j, i] != 0 and not afresh:
            add_row(e[j], -lr_y[i] if in_e[j, i] > 0 else lr_y[i], gram, i)
        in_e[j, i] = 0
    for t in range(k):
        i = active[t]
        want = exception(z[j, i], aj, lr_y[i])
        if afresh and want != 0:
            add_row(e[j], lr_y[i] if want > 0 else -lr_y[i], gram, i)
        elif not afresh and want != in_e[j, i]:
            add_row(e[j], lr_y[i] if want > in_e[j, i] else -lr_y[i], gram, i)
        in_e[j, i] = want


@numba.njit(nogil=True, cache=True)
def gd_steps(
    z, c, gram, y, lr_y, a, alpha, zero_loss, budget, f, e, u_pos, u_neg, in_e, in_a
):  # pragma: no cover (compiled)
    """Up to `budget` GD steps in place on z (m, n) and c (m, n); returns (steps, reached).

    e (m, n), u_pos (n,), u_neg (n,), in_e (m, n) and in_a (n,) are the sums of the module
    docstring and the sets they are sums over, as of the last step; all zero stands for empty
    sets. Before each step, and after the last, f (n,) is set to the outputs a^T sigma(Z) and the
    stop rule is tested on them: min_i y_i f_i >= 1 if `zero_loss`, else > 0. A run that meets it
    takes no further step, so on return f always holds the outputs of the returned state.
    """
    m, n = z.shape
    beta = a[0] - alpha  # 1 - alpha in the dtype of z (a_0 = +1), so no loop mixes precisions
    active = np.empty(n, np.int64)
    leaving = np.empty(n, np.int64)
    f_next = np.empty_like(f)
    # alpha u + (1 - alpha) u_{a_j} for the rows with a_j = +1 and -1.
    shared_pos, shared_neg = np.empty_like(f), np.empty_like(f)
    outputs(z, a, alpha, f)
    for step in range(budget + 1):
        k, margin = active_set(y, f, active)
        if stop_reached(margin, zero_loss):
            return step, True
        if step == budget:
            return step, False
        gone = update_active(u_pos, u_neg, in_a, gram, lr_y, active, k, leaving)
        for col in range(n):
            both = alpha * (u_pos[col] + u_neg[col])
            shared_pos[col] = both + beta * u_pos[col]
            shared_neg[col] = both + beta * u_neg[col]
        f_next[:] = 0
        for j in range(m):
            aj = a[j]
            update_row(j, z, c, gram, lr_y, aj, alpha, active, k, leaving, gone, e, in_e)
            shared = shared_pos if aj > 0 else shared_neg
            # dZ_j = a_j (alpha u + (1 - alpha) (u_{a_j} + e_j)), then row j's share of the
            # next outputs.
            for col in range(n):
                zji = z[j, col] + aj * (shared[col] + beta * e[j, col])
                z[j, col] = zji
                f_next[col] += aj * (zji if zji > 0 else alpha * zji)
        f[:] = f_next
    return budget, False


@numba.njit(nogil=True, cache=True)
def gd_steps_direct(
    z, c, gram, y, lr_y, a, alpha, zero_loss, budget, f
):  # pragma: no cover (compiled)
    """`gd_steps` (the same contract for z, c, f, the stop rule and the return) summing, every
    step, the smaller of P_j and A - P_j for each row j: less bookkeeping, faster at small n
    (INCREMENTAL_MIN_N)."""
    m, n = z.shape
    beta = a[0] - alpha  # 1 - alpha in the dtype of z (a_0 = +1), so no loop mixes precisions
    active = np.empty(n, np.int64)
    # Row j's active points: P_j from the front, the rest from the back.
    sides = np.empty(n, np.int64)
    u = np.empty(n, z.dtype)
    for step in range(budget + 1):
        outputs(z, a, alpha, f)
        k, margin = active_set(y, f, active)
        if stop_reached(margin, zero_loss):
            return step, True
        if step == budget:
            return step, False
        u[:] = 0
        for t in range(k):
            i = active[t]
            for col in range(n):
                u[col] += lr_y[i] * gram[i, col]
        for j in range(m):
            aj = a[j]
            positive, rest = 0, k
            for t in range(k):
                i = active[t]
                if z[j, i] > 0:
                    c[j, i] += aj * lr_y[i]
                    sides[positive] = i
                    positive += 1
                else:
                    c[j, i] += aj * alpha * lr_y[i]
                    rest -= 1
                    sides[rest] = i
            # Sum the smaller side: P_j = sides[:positive] or its complement sides[positive:k].
            take_positive = 2 * positive <= k
            base = aj * alpha if take_positive else aj
            side = aj * beta if take_positive else -aj * beta
            for col in range(n):
                z[j, col] += base * u[col]
            for t in range(0, positive) if take_positive else range(positive, k):
                i = sides[t]
                coef = side * lr_y[i]
                for col in range(n):
                    z[j, col] += coef * gram[i, col]
    return budget, False


@dataclass
class LoopRun:
    """The state of one Gram-form run as numpy arrays of one dtype (views of torch tensors)."""

    z0: np.ndarray  # (m, n) pre-activations at init
    z: np.ndarray  # (m, n) current pre-activations
    c: np.ndarray  # (m, n) coefficients: W = W0 + C X
    gram: np.ndarray  # (n, n) X X^T
    y: np.ndarray  # (n,) labels
    lr_y: np.ndarray  # (n,) lr * y
    a: np.ndarray  # (m,) outer weights
    alpha: np.floating
    f: np.ndarray  # (n,) outputs of the current state, set by every `gd_steps` call
    e: np.ndarray  # (m, n) e_j = sum_i in_e[j, i] lr y_i G_i
    u_pos: np.ndarray  # (n,) sum of lr y_i G_i over the points of in_a with y_i = +1
    u_neg: np.ndarray  # (n,) the same over those with y_i = -1
    in_e: np.ndarray  # (m, n) int8: row j's exceptions in A as of the last step (+1, -1; 0 not)
    in_a: np.ndarray  # (n,) bool: A as of the last step

    @classmethod
    def build(
        cls,
        x: torch.Tensor,
        y: torch.Tensor,
        w0: torch.Tensor,
        lr: float,
        alpha: float,
        dtype,
        check: Checkpoint = no_checkpoint,
    ) -> LoopRun:
        """From float64 inputs x (n, d), labels y (n,) and W(0) (m, d); arithmetic in `dtype`.
        The products over d run in blocks with `check()` between them."""
        z0, gram = matmul_rows(w0, x.T, check), matmul_rows(x, x.T, check)
        return cls.of_products(gram, z0, y, lr, alpha, dtype)

    @classmethod
    def of_products(
        cls,
        gram: torch.Tensor,
        z0: torch.Tensor,
        y: torch.Tensor,
        lr: float,
        alpha: float,
        dtype,
    ) -> LoopRun:
        """From G = X X^T (n, n), Z0 = W(0) X^T (m, n) and labels y (n,), float64."""

        def as_array(t: torch.Tensor) -> np.ndarray:
            return t.to(dtype).contiguous().numpy()

        z0_a = as_array(z0)
        n = z0_a.shape[1]
        return cls(
            z0=z0_a,
            z=z0_a.copy(),
            c=np.zeros_like(z0_a),
            gram=as_array(gram),
            y=as_array(y),
            lr_y=as_array(lr * y),
            a=as_array(outer_weights(z0.shape[0])),
            alpha=z0_a.dtype.type(alpha),
            f=np.zeros(n, z0_a.dtype),
            e=np.zeros_like(z0_a),
            u_pos=np.zeros(n, z0_a.dtype),
            u_neg=np.zeros(n, z0_a.dtype),
            in_e=np.zeros(z0_a.shape, np.int8),
            in_a=np.zeros(n, np.bool_),
        )

    def steps(self, budget: int, zero_loss: bool) -> tuple[int, bool]:
        """Up to `budget` GD steps (`gd_steps`; `gd_steps_direct` below INCREMENTAL_MIN_N)."""
        if self.z.shape[1] < INCREMENTAL_MIN_N:
            return self.direct_steps(budget, zero_loss)
        return self.incremental_steps(budget, zero_loss)

    def direct_steps(self, budget: int, zero_loss: bool) -> tuple[int, bool]:
        return gd_steps_direct(
            self.z, self.c, self.gram, self.y, self.lr_y, self.a, self.alpha, zero_loss,
            budget, self.f,
        )  # fmt: skip

    def incremental_steps(self, budget: int, zero_loss: bool) -> tuple[int, bool]:
        return gd_steps(
            self.z,
            self.c,
            self.gram,
            self.y,
            self.lr_y,
            self.a,
            self.alpha,
            zero_loss,
            budget,
            self.f,
            self.e,
            self.u_pos,
            self.u_neg,
            self.in_e,
            self.in_a,
        )

    def resync(self) -> None:
        """Z = Z0 + C G afresh, and the sums emptied, to be rebuilt exactly by the next step."""
        np.matmul(self.c, self.gram, out=self.z)
        self.z += self.z0
        for acc in (self.e, self.u_pos, self.u_neg, self.in_e, self.in_a):
            acc.fill(0)


def warm_up() -> None:
    """Compile the loop for float32 and float64 now (or load it from numba's on-disk cache,
    next to this module or under NUMBA_CACHE_DIR), so that no run pays for it."""
    x = torch.eye(2, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        run = LoopRun.build(x, torch.ones(2, dtype=torch.float64), x, 1.0, 0.5, dtype)
        run.direct_steps(1, False)
        run.incremental_steps(1, False)


def train_run(
    run: LoopRun,
    *,
    max_steps: int,
    zero_loss: bool,
    record_every: int | None,
    record: Callable[[int], None],
    stop: threading.Event,
) -> tuple[int, bool]:
    """Train one run to its stop rule, `max_steps` or `stop`; returns (steps, rule reached).

    `record(step)` is called at every multiple of `record_every`, with `run.f` the outputs there,
    before the stop rule is applied, as the batched loop does. `stop` is looked at about every
    CALL_SECONDS; how the steps are split into calls changes no iterate.
    """
    step, reached = run.steps(0, zero_loss)
    pace = 1  # steps of the next call, before the resync and record boundaries
    while True:
        if record_every and step % record_every == 0:
            record(step)
        if reached or step >= max_steps or stop.is_set():
            return step, reached
        if step and step % RESYNC_EVERY == 0:
            run.resync()
        budget = min(max_steps - step, RESYNC_EVERY - step % RESYNC_EVERY, pace)
        if record_every:
            budget = min(budget, record_every - step % record_every)
        started = time.perf_counter()
        taken, reached = run.steps(budget, zero_loss)
        pace = next_budget(pace, taken, time.perf_counter() - started)
        step += taken


def next_budget(pace: int, taken: int, seconds: float) -> int:
    """Steps for the next call of the loop: as many as take about CALL_SECONDS at the rate of the
    last call (`taken` steps in `seconds`), growing at most fourfold from `pace`."""
    if taken == 0:
        return pace
    wanted = CALL_SECONDS * taken / seconds if seconds > 0 else float("inf")
    return max(1, int(min(wanted, 4 * pace)))


class _OneThreadPerRun:
    """Torch and BLAS held to one thread each while any batch trains its runs in threads.

    Their pools' idle threads busy-wait between calls and would take the cores from the loops
    (the benchmark's engine time: 0.30 s with them, 0.16 s without, on 2 cores). The settings
    are process-wide, and a worker with a threads pool trains batches concurrently, so the first
    batch in saves them and the last one out restores them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._threads = 1
        self._limits = ExitStack()

    @contextmanager
    def __call__(self) -> Iterator[int]:
        """Yield how many runs to train at once: torch's thread count before the first batch."""
        with self._lock:
            if self._holders == 0:
                self._threads = max(1, torch.get_num_threads())
                torch.set_num_threads(1)  # threads started from now on take one intra-op thread
                self._limits.enter_context(threadpool_limits(limits=1, user_api="blas"))
            self._holders += 1
            threads = self._threads
        try:
            yield threads
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._limits.close()
                    torch.set_num_threads(self._threads)


one_thread_per_run = _OneThreadPerRun()


def train_in_threads(
    setups: list[RunSetup],
    *,
    dtype: torch.dtype,
    record_every: int | None,
    reporter: Reporter,
) -> bool:
    """Train each run (Gram form) in its own compiled loop, as many at once as torch has
    threads; reports from the calling thread. True if cancelled."""
    stop = threading.Event()  # set on cancel, or to end the loops early on an error

    @torch.inference_mode()  # per thread: the caller's inference mode does not reach here
    def train_one(setup: RunSetup) -> dict[str, Any] | None:
        """The run's result; None when the batch stopped before the run began to train."""
        check = checkpoint(stop)
        try:
            check()  # a run still queued when the batch stops never starts
            data = draw_run_data(setup.cell, setup.seed, check)
        except Stopped:
            return None
        cell = setup.cell
        run = LoopRun.of_products(data.gram, data.z0, data.y, cell.lr, cell.alpha, dtype)
        # Views of the loop's arrays: they follow the run as it trains.
        views = {k: torch.from_numpy(getattr(run, k)) for k in ("c", "z0", "gram", "y", "f")}
        w0_sq = data.w0_gram.trace().to(views["c"].dtype)
        trajectory: list[dict[str, Any]] | None = [] if record_every else None

        def record(step: int) -> None:
            norm = float(gram_weight_norms(w0_sq, views["c"], views["z0"], views["gram"]))
            trajectory.append(trajectory_point(step, fit_metrics(views["y"], views["f"]), norm))

        steps, reached = train_run(
            run,
            max_steps=cell.max_steps,
            zero_loss=cell.stop == "zero_loss",
            record_every=record_every,
            record=record,
            stop=stop,
        )
        reason = stop_reason(reached, cell.stop, steps >= cell.max_steps, stop.is_set())
        try:
            return reporter.result_of(
                setup, data, views["c"], views["f"], steps, reason, trajectory, check
            )
        except Stopped:  # the batch stopped while the run's baseline was being solved
            return None

    cancelled = False
    with one_thread_per_run() as threads, ThreadPoolExecutor(threads, "bolab-run") as pool:
        pending = {pool.submit(train_one, setup): setup for setup in setups}
        try:
            while pending:
                done, _ = wait(pending, timeout=reporter.poll_seconds, return_when=FIRST_COMPLETED)
                finished = [(pending.pop(future), future.result()) for future in done]
                reporter.report([(setup, run) for setup, run in finished if run is not None])
                if not cancelled and reporter.cancel_requested():
                    cancelled = True
                    # Training runs end within CALL_SECONDS, as "cancelled"; runs still being
                    # prepared stop at their next block, and queued ones never start.
                    stop.set()
        finally:
            stop.set()
            pool.shutdown(cancel_futures=True)  # an error: queued runs never start
    return cancelled
