"""JobSpec: every bad field is rejected with its name in the message; defaults and grids resolve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from bo_engine.spec import GRID_AXES, Cell, JobSpec

pytestmark = pytest.mark.fast

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BASE = {"n": 20, "d": 40}

# (change to BASE, words the message must contain): the field's name, and where it is a range,
# a bound of the allowed range.
BAD_FIELDS = [
    ({"n": -5}, ["n", "2"]),
    ({"n": 1}, ["n", "2"]),
    ({"n": 2.5}, ["n"]),
    ({"d": 0}, ["d", "1"]),
    ({"gamma": 1.5}, ["gamma", "1"]),
    ({"gamma": 1.0}, ["gamma", "1"]),
    ({"gamma": -0.1}, ["gamma", "0"]),
    ({"width": 7}, ["width", "even"]),
    ({"width": 0}, ["width", "2"]),
    ({"width": -4}, ["width"]),
    ({"corruption_rate": 0.6}, ["corruption_rate", "0.5"]),
    ({"corruption_rate": 0.5}, ["corruption_rate", "0.5"]),
    ({"corruption_rate": -0.01}, ["corruption_rate", "0"]),
    ({"corruption_rate": 0.2, "num_corrupt": 3}, ["corruption_rate", "num_corrupt"]),
    ({"corruption_rate": 0.1, "num_corrupt": 3}, ["corruption_rate", "num_corrupt"]),
    ({"num_corrupt": 10}, ["num_corrupt", "n/2"]),  # n = 20: k must be < 10
    ({"num_corrupt": 25}, ["num_corrupt", "n/2"]),
    ({"num_corrupt": -1}, ["num_corrupt", "0"]),
    ({"alpha": 0}, ["alpha", "0"]),
    ({"alpha": -0.2}, ["alpha", "0"]),
    ({"alpha": 1.5}, ["alpha", "1"]),
    ({"lr": 0}, ["lr", "0"]),
    ({"lr": -1e-3}, ["lr", "0"]),
    ({"init_scale": -1}, ["init_scale", "0"]),
    ({"init_scale": 0}, ["init_scale", "0"]),
    ({"stop": "zero_risk"}, ["stop", "zero_train_error", "zero_loss"]),
    ({"max_steps": 0}, ["max_steps", "1"]),
    ({"n_test": 0}, ["n_test", "1"]),
    ({"seeds": 0}, ["seeds", "1"]),
    ({"seed": -1}, ["seed", "0"]),
    ({"device": "tpu"}, ["device", "cuda"]),
    ({"dtype": "float16"}, ["dtype", "float32"]),
    ({"record_every": 0}, ["record_every", "1"]),
    ({"learning_rate": 0.1}, ["learning_rate"]),  # unknown field
    ({"gamma": math.nan}, ["gamma", "finite"]),
    ({"lr": math.inf}, ["lr", "finite"]),
    ({"init_scale": -math.inf}, ["init_scale"]),
    ({"alpha": math.nan}, ["alpha"]),
    ({"theory": {"benign_gamma_n": 0}}, ["benign_gamma_n"]),
    ({"theory": {"unknown_constant": 1}}, ["unknown_constant"]),
    # Grids.
    ({"grid": {"depth": [1, 2]}}, ["depth", "d_over_n"]),  # names the allowed axes
    ({"grid": {"device": ["cpu"]}}, ["device"]),
    ({"grid": {"d": [10], "d_over_n": [1]}}, ["d", "d_over_n"]),
    ({"grid": {"gamma": [0.1], "gamma_times_n": [1]}}, ["gamma", "gamma_times_n"]),
    ({"grid": {"gamma": []}}, ["gamma"]),
    ({"grid": {"gamma": [0.1, 1.5]}}, ["gamma", "1"]),
    ({"grid": {"gamma_times_n": [30]}}, ["gamma"]),  # gamma = 30 / 20 >= 1
    ({"grid": {"width": [4, 5]}}, ["width", "even"]),
    ({"grid": {"n": [20, 1]}}, ["n", "2"]),
    ({"grid": {"n": [20.5]}}, ["n"]),
    ({"grid": {"alpha": [0.1, 0]}}, ["alpha"]),
    ({"grid": {"lr": [0.1, 0]}}, ["lr"]),
    ({"grid": {"lr": [-0.1]}}, ["lr"]),
    ({"grid": {"init_scale": [0.0]}}, ["init_scale"]),
    ({"grid": {"stop": ["zero_loss", "never"]}}, ["stop"]),
    ({"grid": {"num_corrupt": [2, 10]}}, ["num_corrupt", "n/2"]),
    ({"grid": {"num_corrupt": [2]}, "corruption_rate": 0.2}, ["corruption_rate", "num_corrupt"]),
    ({"grid": {"corruption_rate": [0.1]}, "num_corrupt": 2}, ["corruption_rate", "num_corrupt"]),
    ({"grid": {"corruption_rate": [0.1, 0.7]}}, ["corruption_rate"]),
    ({"grid": {"gamma": [math.nan]}}, ["gamma", "finite"]),
    ({"grid": {"d_over_n": [math.inf]}, "d": None}, ["d_over_n"]),
    ({"grid": {"d_over_n": [0.33]}, "d": None}, ["d_over_n"]),  # 20 * 0.33 = 6.6
    ({"grid": {"d_over_n": [0.01]}, "d": None}, ["d_over_n"]),  # d = 0.2
    ({"grid": ["n", 20]}, ["grid"]),
    ({"grid": {"gamma": 0.1}}, ["gamma"]),  # not a list
    ({"n": None}, ["n", "required"]),
    ({"d": None}, ["d", "required"]),
]


@pytest.mark.parametrize(
    "change,words", BAD_FIELDS, ids=[json.dumps(c, default=str)[:60] for c, _ in BAD_FIELDS]
)
def test_bad_field_is_rejected_with_its_name(change: dict, words: list[str]) -> None:
    payload = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate(payload)
    message = str(err.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"


def test_json_with_nan_or_infinity_is_rejected() -> None:
    for text in ('{"n": 20, "d": 40, "gamma": NaN}', '{"n": 20, "d": 40, "lr": Infinity}'):
        with pytest.raises(ValidationError):
            JobSpec.model_validate_json(text)
        # What a JSON body parsed by Python's json module would deliver:
        with pytest.raises(ValidationError) as err:
            JobSpec.model_validate(json.loads(text))
        assert ("gamma" if "gamma" in text else "lr") in str(err.value)


def test_missing_n_everywhere() -> None:
    with pytest.raises(ValidationError, match="n is required"):
        JobSpec.model_validate({"d": 10})
    with pytest.raises(ValidationError, match="n is required"):
        JobSpec.model_validate({"grid": {"d_over_n": [1]}})
    with pytest.raises(ValidationError, match="d is required"):
        JobSpec.model_validate({"n": 10})


def test_defaults() -> None:
    spec = JobSpec(n=50, d=100)
    assert spec.width == 64 and spec.alpha == 0.1 and spec.gamma == 0.1
    assert spec.corruption_rate == 0.1 and spec.num_corrupt is None
    assert spec.stop == "zero_train_error" and spec.max_steps == 100_000
    assert spec.n_test == 1000 and spec.seeds == 1 and spec.seed == 0
    assert spec.device == "auto" and spec.dtype == "float32"
    assert spec.max_margin_baseline is True and spec.record_every is None
    assert spec.lr is None and spec.init_scale is None  # resolved per cell
    (cell,) = spec.cells
    assert cell.lr == pytest.approx(1 / (64 * 50), rel=1e-15)
    assert cell.init_scale == pytest.approx(1 / (64 * math.sqrt(100)), rel=1e-15)
    assert cell.corruption_rate == 0.1 and cell.num_corrupt is None
    assert spec.runs_total == 1


def test_explicit_values_are_kept_and_defaults_follow_the_cell() -> None:
    spec = JobSpec(n=10, d=9, width=4, lr=0.3, init_scale=0.02, num_corrupt=4, seeds=3)
    (cell,) = spec.cells
    assert cell.lr == 0.3 and cell.init_scale == 0.02
    assert cell.num_corrupt == 4 and cell.corruption_rate is None
    assert spec.runs_total == 3
    # lr = 1/(width n) and init_scale = 1/(width sqrt d) follow each cell's own n, d, width.
    swept = JobSpec(grid={"n": [10, 40], "d": [4, 25], "width": [2, 8]})
    for c in swept.cells:
        assert c.lr == pytest.approx(1 / (c.width * c.n), rel=1e-15)
        assert c.init_scale == pytest.approx(1 / (c.width * math.sqrt(c.d)), rel=1e-15)


def test_grid_is_the_cartesian_product_in_axis_order() -> None:
    spec = JobSpec(
        d=30,
        grid={"n": [10, 20, 30], "gamma": [0.0, 0.5], "stop": ["zero_loss"], "seed": [0, 7]},
        seeds=2,
    )
    assert spec.axes == ["n", "gamma", "stop", "seed"]
    got = [(c.n, c.gamma, c.stop, c.seed) for c in spec.cells]
    expected = [(n, g, "zero_loss", s) for n in (10, 20, 30) for g in (0.0, 0.5) for s in (0, 7)]
    assert got == expected
    assert spec.runs_total == 12 * 2
    assert all(c.d == 30 and c.width == 64 for c in spec.cells)


def test_grid_of_seeds_per_cell() -> None:
    spec = JobSpec(n=10, d=10, grid={"seeds": [1, 4]})
    assert [c.seeds for c in spec.cells] == [1, 4] and spec.runs_total == 5


def test_derived_axes_resolve() -> None:
    spec = JobSpec(grid={"n": [50, 60], "d_over_n": [1, 2.5], "gamma_times_n": [5, 0]})
    got = [(c.n, c.d, c.gamma) for c in spec.cells]
    assert got == [
        (50, 50, 5 / 50),
        (50, 50, 0.0),
        (50, 125, 5 / 50),
        (50, 125, 0.0),
        (60, 60, 5 / 60),
        (60, 60, 0.0),
        (60, 150, 5 / 60),
        (60, 150, 0.0),
    ]
    params = spec.cells[2].params()
    assert params["d_over_n"] == 2.5 and params["gamma_times_n"] == pytest.approx(5.0)
    assert {"n", "d", "gamma", "width", "alpha", "lr", "init_scale", "stop"} <= set(params)
    # Top-level n with a derived axis.
    (cell,) = JobSpec(n=40, grid={"d_over_n": [0.25]}).cells
    assert cell.d == 10


def test_grid_num_corrupt_axis_replaces_the_default_rate() -> None:
    spec = JobSpec(n=10, d=10, grid={"num_corrupt": [0, 4]})
    assert [(c.num_corrupt, c.corruption_rate) for c in spec.cells] == [(0, None), (4, None)]


def test_every_grid_axis_is_accepted() -> None:
    values = {
        "n": 12, "d": 6, "width": 4, "gamma": 0.2, "corruption_rate": 0.1, "num_corrupt": 1,
        "alpha": 0.5, "init_scale": 0.1, "lr": 0.01, "stop": "zero_loss", "max_steps": 5,
        "n_test": 3, "seeds": 2, "seed": 4, "d_over_n": 0.5, "gamma_times_n": 1.2,
    }  # fmt: skip
    assert set(values) == set(GRID_AXES)
    for axis in GRID_AXES:
        payload = {"n": 12, "d": 6, "grid": {axis: [values[axis]]}}
        if axis == "d_over_n":
            del payload["d"]
        cell = JobSpec.model_validate(payload).cells[0]
        if axis in Cell.model_fields:
            assert getattr(cell, axis) == values[axis]
    assert JobSpec(n=12, grid={"d_over_n": [0.5]}).cells[0].d == 6
    assert JobSpec(n=12, d=6, grid={"gamma_times_n": [1.2]}).cells[0].gamma == pytest.approx(0.1)


ROUND_TRIP = [
    {"n": 20, "d": 40, "grid": {"gamma_times_n": [1, 2]}, "seeds": 2, "record_every": 10},
    {"n": 20, "d": 40, "lr": 0.01, "theory": {"benign_gamma_n": 2.0}},
    {"n": 20, "d": 40, "num_corrupt": 3},
    {"n": 20, "grid": {"d_over_n": [1, 2], "num_corrupt": [0, 3]}},
]


@pytest.mark.parametrize("exclude_unset", [True, False])
@pytest.mark.parametrize("payload", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_json_round_trip(payload: dict, exclude_unset: bool) -> None:
    """A spec's own JSON (as stored with a job or a result) validates back to the same spec."""
    spec = JobSpec.model_validate(payload)
    again = JobSpec.model_validate_json(spec.model_dump_json(exclude_unset=exclude_unset))
    assert again.cells == spec.cells
    assert again.model_dump() == spec.model_dump()


@pytest.mark.parametrize("name,cells,runs", [("paper_heatmap", 110, 550), ("paper_gamma", 40, 400)])
def test_examples_validate(name: str, cells: int, runs: int) -> None:
    spec = JobSpec.model_validate_json((EXAMPLES / f"{name}.json").read_text())
    assert len(spec.cells) == cells and spec.runs_total == runs
    for cell in spec.cells:
        assert cell.width == 64 and cell.alpha == 0.1 and cell.corruption_rate == 0.1
        assert cell.n_test == 1000 and cell.stop == "zero_train_error"
    if name == "paper_heatmap":
        assert {c.n for c in spec.cells} == set(range(50, 151, 10))
        assert {c.d // c.n for c in spec.cells} == set(range(1, 11))
        assert all(c.d % c.n == 0 for c in spec.cells)
        assert all(c.gamma == pytest.approx(5 / c.n) for c in spec.cells)
    else:
        assert {c.n for c in spec.cells} == {50, 100, 150, 200}
        assert all(c.d == 2 * c.n for c in spec.cells)
        assert sorted({round(c.gamma, 10) for c in spec.cells}) == [i / 100 for i in range(10)]
