"""The products a run trains and reports from (`bo_engine.products`), accumulated over chunks of
d: the same as those of the explicit draw, results equal to those of the explicit W, and memory
that does not grow with d."""

from __future__ import annotations

import pytest
import torch

from bo_engine.data import CHUNK_COLUMNS, make_train_set
from bo_engine.metrics import products_result, run_result
from bo_engine.model import init_weights
from bo_engine.products import RunData, draw_run_data
from bo_engine.spec import JobSpec, TheoryRule
from tests.engine_helpers import last_number_printed

pytestmark = pytest.mark.fast

F64 = torch.float64


@pytest.mark.parametrize(
    "n,d,width", [(30, 2 * CHUNK_COLUMNS + 808, 4), (12, 50, 8), (40, 4096, 2)]
)
def test_products_over_chunks_equal_those_of_the_explicit_draw(n: int, d: int, width: int):
    cell = JobSpec(n=n, d=d, width=width, gamma=0.2, n_test=10).cells[0]
    chunked = draw_run_data(cell, 3)
    explicit = RunData.from_explicit(make_train_set(cell, 3), init_weights(cell, 3))
    for name, value in vars(explicit).items():
        torch.testing.assert_close(getattr(chunked, name), value, rtol=1e-12, atol=1e-12)


def test_results_from_products_equal_those_of_the_explicit_weights() -> None:
    """W = W0 + C X for some C: every reported number (norms, param_snr, test error, the
    baseline) from the products and C equals the one from W formed whole."""
    cell = JobSpec(n=20, d=60, width=6, gamma=0.3, n_test=2000).cells[0]
    train, w0 = make_train_set(cell, 1), init_weights(cell, 1)
    c = torch.randn(6, 20, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.3
    w = w0 + c @ train.x
    f = torch.randn(20, dtype=F64)
    kwargs = {"max_margin_baseline": True, "rule": TheoryRule(), "trajectory": None}
    mine = products_result(cell, 1, draw_run_data(cell, 1), c, f, 5, "max_steps", **kwargs)
    theirs = run_result(cell, 1, train, w, f, 5, "max_steps", **kwargs)
    for name in ("weight_norm", "param_snr", "test_error", "margin", "normalized_margin"):
        assert mine[name] == pytest.approx(theirs[name], rel=1e-10), name
    for name in ("norm", "test_error", "margin_ratio"):
        assert mine["max_margin"][name] == pytest.approx(theirs["max_margin"][name], rel=1e-9)
    assert mine["max_margin"]["separable"] is True


PEAK_GROWTH = """
import json, resource, sys
from bo_engine.products import draw_run_data
from bo_engine.spec import JobSpec
cell = JobSpec.model_validate(json.loads(sys.argv[1])).cells[0]
draw_run_data(JobSpec(n=4, d=8, n_test=1).cells[0], 0)  # first-call allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
draw_run_data(cell, 0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_drawing_a_run_holds_no_inputs() -> None:
    """n = 200, d = 300000: x alone would be 480 MB of float64; the draw holds one chunk."""
    body = {"n": 200, "d": 300_000, "width": 4, "n_test": 1}
    grown = last_number_printed(PEAK_GROWTH, body)
    assert grown < 100 * 2**20, f"grew by {grown / 2**20:.0f} MiB"
