"""Gradient descent of one run on a CPU, compiled: many Gram-form steps per call.

On a CPU the batched tensor step of `bo_engine.train` is bound by dispatch, not arithmetic: about
15 small kernels at a few microseconds each, whatever the batch size, and the slowest run of a
batch alone takes thousands of dependent steps. Here one numba-compiled loop nest does a whole
step (about 9 us at n = 150, width 64, float32, against 75-90 us for the tensor step), and the
runs of a batch train in parallel threads, since the kernel releases the GIL.

One step, with A = {i : y_i f_i < 1} the active set and g_i = lr y_i G_i (G_i row i of the Gram
matrix G = X X^T), is the Gram form of the module docstring of `bo_engine.train`:

    dC_ji = lr y_i a_j sigma'(z_ji)                                for i in A
    dZ_j  = a_j sum_{i in A} sigma'(z_ji) g_i
          = a_j (alpha u + (1 - alpha) sum_{i in P_j} g_i)         P_j = {i in A : z_ji > 0}
          = a_j (u - (1 - alpha) sum_{i in A - P_j} g_i)           u = sum_{i in A} g_i

taking whichever of P_j and A - P_j is smaller, so that row j costs (1 + min) n multiply-adds
instead of |A| n. The same iterates as the tensor step, up to rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import torch

# Recompute Z from C this often (in steps) so that rounding in the incremental update cannot
# drift; the loop also returns to Python this often, to notice a cancel.
RESYNC_EVERY = 1000


@numba.njit(nogil=True, cache=True)
def gd_steps(z, c, gram, y, lr_y, a, alpha, zero_loss, budget, f):  # pragma: no cover (compiled)
    """Up to `budget` GD steps in place on z (m, n) and c (m, n); returns (steps, reached).

    Before each step, and after the last, f (n,) is set to the outputs a^T sigma(Z) and the stop
    rule is tested on them: min_i y_i f_i >= 1 if `zero_loss`, else > 0. A run that meets it takes
    no further step, so on return f always holds the outputs of the returned state.
    """
    m, n = z.shape
    beta = a[0] - alpha  # 1 - alpha in the dtype of z (a_0 = +1), so no loop mixes precisions
    active = np.empty(n, np.int64)
    chosen = np.empty(n, np.int64)
    u = np.empty(n, z.dtype)
    for step in range(budget + 1):
        f[:] = 0
        for j in range(m):
            aj = a[j]
            for i in range(n):
                zji = z[j, i]
                f[i] += aj * (zji if zji > 0 else alpha * zji)
        k = 0
        margin = np.inf
        for i in range(n):
            yf = y[i] * f[i]
            margin = min(margin, yf)
            if yf < 1:
                active[k] = i
                k += 1
        if (margin >= 1) if zero_loss else (margin > 0):
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
            positive = 0
            for t in range(k):
                i = active[t]
                if z[j, i] > 0:
                    c[j, i] += aj * lr_y[i]
                    positive += 1
                else:
                    c[j, i] += aj * alpha * lr_y[i]
            # Sum the smaller side: P_j (z > 0) or its complement in A.
            take_positive = 2 * positive <= k
            base = aj * alpha if take_positive else aj
            side = aj * beta if take_positive else -aj * beta
            count = 0
            for t in range(k):
                i = active[t]
                if (z[j, i] > 0) == take_positive:
                    chosen[count] = i
                    count += 1
            for col in range(n):
                z[j, col] += base * u[col]
            for t in range(count):
                i = chosen[t]
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

    @classmethod
    def build(
        cls, x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, lr: float, alpha: float, dtype
    ) -> LoopRun:
        """From float64 inputs x (n, d), labels y (n,) and W(0) (m, d); arithmetic in `dtype`."""

        def as_array(t: torch.Tensor) -> np.ndarray:
            return t.to(dtype).contiguous().numpy()

        z0 = as_array(w0 @ x.T)
        a = np.ones(w0.shape[0], z0.dtype)
        a[1::2] = -1
        return cls(
            z0=z0,
            z=z0.copy(),
            c=np.zeros_like(z0),
            gram=as_array(x @ x.T),
            y=as_array(y),
            lr_y=as_array(lr * y),
            a=a,
            alpha=z0.dtype.type(alpha),
            f=np.zeros(x.shape[0], z0.dtype),
        )

    def steps(self, budget: int, zero_loss: bool) -> tuple[int, bool]:
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
        )

    def resync(self) -> None:
        np.matmul(self.c, self.gram, out=self.z)
        self.z += self.z0


def warm_up() -> None:
    """Compile the loop for float32 and float64 now (or load it from numba's on-disk cache,
    next to this module or under NUMBA_CACHE_DIR), so that no run pays for it."""
    x = torch.eye(2, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        LoopRun.build(x, torch.ones(2, dtype=torch.float64), x, 1.0, 0.5, dtype).steps(1, False)


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
    before the stop rule is applied, as the batched loop does.
    """
    step, reached = run.steps(0, zero_loss)
    while True:
        if record_every and step % record_every == 0:
            record(step)
        if reached or step >= max_steps or stop.is_set():
            return step, reached
        if step and step % RESYNC_EVERY == 0:
            run.resync()
        budget = min(max_steps - step, RESYNC_EVERY - step % RESYNC_EVERY)
        if record_every:
            budget = min(budget, record_every - step % record_every)
        taken, reached = run.steps(budget, zero_loss)
        step += taken
