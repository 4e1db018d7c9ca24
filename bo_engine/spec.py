"""Experiment specs: the JSON contract of a job and its expansion into grid cells.

A `JobSpec` is what a researcher submits. Its scalar fields describe one experiment; its optional
`grid` sweeps some of them (plus the derived axes `d_over_n` and `gamma_times_n`). Expanding the
grid gives a list of `Cell`s with every parameter resolved (defaults such as `lr = 1/(width n)`
filled in), and each cell runs `seeds` seeds. Field names and defaults are a public contract.
"""

from __future__ import annotations

import itertools
import math
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

StopRule = Literal["zero_train_error", "zero_loss"]
Device = Literal["auto", "cpu", "cuda"]
DType = Literal["float32", "float64"]

DEFAULT_CORRUPTION_RATE = 0.1

# Axes a grid may sweep: the per-cell scalar fields plus two derived ones. Device, dtype and the
# reporting switches are per job (one batch runs on one device in one dtype), so they are not axes.
CELL_AXES = (
    "n",
    "d",
    "width",
    "gamma",
    "corruption_rate",
    "num_corrupt",
    "alpha",
    "init_scale",
    "lr",
    "stop",
    "max_steps",
    "n_test",
    "seeds",
    "seed",
)
DERIVED_AXES = ("d_over_n", "gamma_times_n")
GRID_AXES = CELL_AXES + DERIVED_AXES

GridValue = Annotated[int | float | str, Field(union_mode="left_to_right")]

# Axes a boundary search may move along: the numeric per-cell fields and the two derived ones.
REFINE_AXES = tuple(a for a in CELL_AXES if a not in ("stop", "seeds", "seed")) + DERIVED_AXES
# Of those, the ones that take whole numbers (a planned point is rounded; width to an even one).
INTEGER_AXES = ("n", "d", "width", "num_corrupt", "max_steps", "n_test")


def _known_metric(metric: str) -> str:
    from bo_engine.results import RUN_METRICS  # results imports this module: import when used

    if metric not in RUN_METRICS:
        raise ValueError(f"unknown metric {metric!r}; metrics: {', '.join(RUN_METRICS)}")
    return metric


class SeedsTarget(BaseModel):
    """When a cell has seeds enough: the 95 % interval of the mean of `metric` is this narrow."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field("test_error", description="a run metric, e.g. test_error")
    ci95_halfwidth: float = Field(gt=0, description="target half-width of the t 95 % interval")

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        return _known_metric(metric)


class SeedsPolicy(BaseModel):
    """Seeds to a target: a cell starts with `min` seeds and gets more, round by round, until
    its interval meets `target` or it has `max` seeds. New seeds are the next seed numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min: int = Field(5, ge=2, description="seeds every cell starts with (2 or more: an interval)")
    max: int = Field(200, ge=2, description="most seeds a cell may get")
    target: SeedsTarget

    @model_validator(mode="after")
    def _min_le_max(self) -> SeedsPolicy:
        if self.min > self.max:
            raise ValueError(f"seeds.min ({self.min}) must be <= seeds.max ({self.max})")
        return self


class RefineSpec(BaseModel):
    """Boundary search: on every line (combination of grid axis values), place cells along
    `axis` within `range` until the crossing of the cell mean of `metric` through `level` is
    known to within `rel_tolerance` of its value (95 % interval), or the line has
    `max_cells_per_line` cells."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    axis: str = Field(description=f"the axis to search along; one of {', '.join(REFINE_AXES)}")
    range: tuple[float, float] = Field(description="[lo, hi], lo < hi: where to search")
    scale: Literal["linear", "log"] = Field("log", description="cells are placed evenly in this")
    metric: str = Field("test_error", description="the run metric whose cell mean crosses level")
    level: float = Field(0.1, description="the level whose crossing is sought")
    rel_tolerance: float = Field(
        0.1, gt=0, description="done when the crossing's 95 % interval is narrower than this "
        "times the estimate"
    )
    max_cells_per_line: int = Field(24, ge=3, description="most cells a line may use")

    @field_validator("axis")
    @classmethod
    def _refine_axis(cls, axis: str) -> str:
        if axis not in REFINE_AXES:
            raise ValueError(f"unknown axis {axis!r}; allowed axes: {', '.join(REFINE_AXES)}")
        return axis

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        return _known_metric(metric)

    @field_validator("range")
    @classmethod
    def _range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        lo, hi = bounds
        if not lo < hi:
            raise ValueError(f"range must be [lo, hi] with lo < hi (got [{lo}, {hi}])")
        return bounds

    @model_validator(mode="after")
    def _log_positive(self) -> RefineSpec:
        if self.scale == "log" and self.range[0] <= 0:
            raise ValueError(f"refine.range: a log scale needs lo > 0 (got {self.range[0]})")
        return self


class TheoryRule(BaseModel):
    """Constants of the regime rule read off the paper's theorems (all orders of magnitude).

    Benign overfitting (Theorem 3.x) needs signal strength gamma of order 1/n or more and input
    dimension d of order n or more; harmful overfitting needs gamma of order alpha^3/d or less.
    A cell is "benign" when gamma*n >= benign_gamma_n and d/n >= benign_d_over_n, "harmful" when
    gamma*d/alpha^3 <= harmful_gamma_d_over_alpha3, and "intermediate" otherwise.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    benign_gamma_n: float = Field(1.0, gt=0, description="lower bound on gamma*n for 'benign'")
    benign_d_over_n: float = Field(1.0, gt=0, description="lower bound on d/n for 'benign'")
    harmful_gamma_d_over_alpha3: float = Field(
        1.0, gt=0, description="upper bound on gamma*d/alpha^3 for 'harmful'"
    )


class Cell(BaseModel):
    """One grid cell with every parameter resolved; `seeds` runs share it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    n: int = Field(ge=2, description="number of training points")
    d: int = Field(ge=1, description="input dimension")
    width: int = Field(ge=2, description="hidden units (even: half +1, half -1 outer weights)")
    gamma: float = Field(ge=0, lt=1, description="signal strength")
    corruption_rate: float | None = Field(ge=0, lt=0.5)
    num_corrupt: int | None = Field(ge=0)
    alpha: float = Field(gt=0, le=1, description="leaky ReLU slope")
    init_scale: float = Field(gt=0)
    lr: float = Field(gt=0)
    stop: StopRule
    max_steps: int = Field(ge=1)
    n_test: int = Field(ge=1)
    seeds: int = Field(ge=1)
    seed: int = Field(ge=0)

    @field_validator("width")
    @classmethod
    def _width_even(cls, width: int) -> int:
        if width % 2:
            raise ValueError(f"width must be even (got {width})")
        return width

    @model_validator(mode="after")
    def _corruption(self) -> Cell:
        if (self.corruption_rate is None) == (self.num_corrupt is None):
            raise ValueError("exactly one of corruption_rate and num_corrupt must be set")
        if self.num_corrupt is not None and not self.num_corrupt < self.n / 2:
            raise ValueError(f"num_corrupt must be < n/2 = {self.n / 2} (got {self.num_corrupt})")
        return self

    @property
    def d_over_n(self) -> float:
        return self.d / self.n

    @property
    def gamma_times_n(self) -> float:
        return self.gamma * self.n

    def params(self) -> dict[str, Any]:
        """The resolved scalar fields, as reported in results."""
        return {**self.model_dump(), "d_over_n": self.d_over_n, "gamma_times_n": self.gamma_times_n}

    def shape_key(self) -> tuple[str | float, ...]:
        """Cells with equal keys train in one batch.

        The Gram form pads each run to the batch's largest n, so any n and d share a batch; the
        plain form needs equal n and d. alpha and the stop rule are in the key so that a step
        is one fused leaky ReLU with a scalar slope and one stop test.
        """
        key = (self.width, self.alpha, self.stop)
        return ("gram", *key) if uses_gram_form(self.n, self.d) else ("plain", *key, self.n, self.d)


def uses_gram_form(n: int, d: int) -> bool:
    """Whether the Gram (dual) form is the cheaper one.

    A step costs O(width k n) in the Gram form (k active points, typically n/4 or fewer) and
    O(width n d) in the plain form, so the Gram form wins unless d is well below n.
    """
    return 4 * d >= n


class JobSpec(BaseModel):
    """An experiment or a sweep: the body of `POST /v1/jobs` and of `bolab run --local`."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"n": 50, "d": 100, "gamma": 0.1, "seeds": 2, "max_steps": 20000},
                {
                    "grid": {"n": [50, 100], "d_over_n": [1, 5], "gamma_times_n": [5]},
                    "seeds": 2,
                },
            ]
        },
    )

    n: int | None = Field(None, ge=2, description="training points (required here or as an axis)")
    d: int | None = Field(None, ge=1, description="input dimension (required here or as an axis)")
    width: int = Field(64, ge=2, description="hidden units, even")
    gamma: float = Field(0.1, ge=0, lt=1, description="signal strength, in [0, 1)")
    corruption_rate: float | None = Field(
        None,
        ge=0,
        lt=0.5,
        description=f"probability a training label flips; {DEFAULT_CORRUPTION_RATE} unless "
        "num_corrupt is set",
    )
    num_corrupt: int | None = Field(
        None, ge=0, description="exactly this many labels flip (k < n/2); excludes corruption_rate"
    )
    alpha: float = Field(0.1, gt=0, le=1, description="leaky ReLU slope, in (0, 1]")
    init_scale: float | None = Field(None, gt=0, description="init std; null = 1/(width sqrt(d))")
    lr: float | None = Field(None, gt=0, description="GD step size; null = 1/(width n)")
    stop: StopRule = "zero_train_error"
    max_steps: int = Field(100_000, ge=1)
    n_test: int = Field(1000, ge=1, description="fresh clean-label test points per run")
    seeds: Annotated[int, Field(ge=1)] | SeedsPolicy = Field(
        1,
        union_mode="left_to_right",
        description="runs per cell, or seeds to a target: {min, max, target: {metric, "
        "ci95_halfwidth}}",
    )
    seed: int = Field(0, ge=0, description="base seed; runs use seed, seed+1, ...")
    device: Device = "auto"
    dtype: DType = "float32"
    grid: dict[str, list[GridValue]] | None = Field(
        None, description=f"axis -> values; axes: {', '.join(GRID_AXES)}"
    )
    max_margin_baseline: bool = Field(True, description="solve the hard-margin linear baseline")
    record_every: int | None = Field(None, ge=1, description="trajectory every this many steps")
    cache: bool = Field(
        True,
        description="serve runs the lab has trained before from its run cache; false retrains "
        "every run (timing, verification)",
    )
    theory: TheoryRule = Field(default_factory=TheoryRule)
    refine: RefineSpec | None = Field(
        None, description="boundary search along one axis, on every line of the grid"
    )

    @field_validator("width")
    @classmethod
    def _width_even(cls, width: int) -> int:
        return Cell._width_even(width)

    @model_validator(mode="before")
    @classmethod
    def _one_corruption_field(cls, data: Any) -> Any:
        # Both given by the user (a null corruption_rate is the default, not a choice).
        if isinstance(data, dict):
            given = {k for k in ("corruption_rate", "num_corrupt") if data.get(k) is not None}
            grid = data.get("grid")
            if isinstance(grid, dict):
                given |= {k for k in ("corruption_rate", "num_corrupt") if k in grid}
            if len(given) == 2:
                raise ValueError("corruption_rate and num_corrupt: set one of them, not both")
        return data

    @field_validator("grid")
    @classmethod
    def _grid_axes(
        cls, grid: dict[str, list[GridValue]] | None
    ) -> dict[str, list[GridValue]] | None:
        if grid is None:
            return None
        for axis, values in grid.items():
            if axis not in GRID_AXES:
                raise ValueError(
                    f"grid: unknown axis {axis!r}; allowed axes: {', '.join(GRID_AXES)}"
                )
            if not values:
                raise ValueError(f"grid.{axis}: needs at least one value")
        for a, b in (("d", "d_over_n"), ("gamma", "gamma_times_n")):
            if a in grid and b in grid:
                raise ValueError(f"grid: axes {a!r} and {b!r} both set {a}; keep one")
        return grid

    @model_validator(mode="after")
    def _default_corruption(self) -> JobSpec:
        # The default applies only where num_corrupt is not used, so that a spec's own JSON
        # (defaults included) validates back to the same spec.
        uses_count = self.num_corrupt is not None or "num_corrupt" in (self.grid or {})
        if self.corruption_rate is None and not uses_count:
            self.corruption_rate = DEFAULT_CORRUPTION_RATE
        return self

    @model_validator(mode="after")
    def _adaptive_fits(self) -> JobSpec:
        grid = self.grid or {}
        if isinstance(self.seeds, SeedsPolicy) and "seeds" in grid:
            raise ValueError("grid.seeds: seeds is a policy here ({min, max, target}); not an axis")
        if self.refine is None:
            return self
        axis = self.refine.axis
        clash = {axis} | {"d_over_n": {"d"}, "d": {"d_over_n"}, "gamma_times_n": {"gamma"},
                          "gamma": {"gamma_times_n"}}.get(axis, set())
        if clash & set(grid):
            raise ValueError(f"refine.axis: {axis!r} is also a grid axis; sweep it one way only")
        if self.seeds == 1:
            raise ValueError("seeds: a boundary search needs 2 or more seeds per cell (intervals)")
        return self

    @model_validator(mode="after")
    def _cells_resolve(self) -> JobSpec:
        _ = self.cells  # every cell must be valid at submission, not when a worker picks it up
        return self

    @property
    def is_adaptive(self) -> bool:
        """Whether cells or seeds are chosen round by round (a refine section or a seeds
        policy), rather than all known at submission."""
        return self.refine is not None or isinstance(self.seeds, SeedsPolicy)

    @property
    def lines(self) -> list[dict[str, GridValue]]:
        """Every combination of the grid axes' values, in grid order (one point if no grid)."""
        grid = self.grid or {}
        combos = itertools.product(*grid.values()) if grid else [()]
        return [dict(zip(grid, combo, strict=True)) for combo in combos]

    @property
    def axes(self) -> list[str]:
        return list(self.grid or {})

    @cached_property
    def cells(self) -> list[Cell]:
        """The cartesian product of the grid axes, in axis order, every parameter resolved.

        With a refine section: every line at both ends of the range (where each line's search
        starts). With a seeds policy, a cell's `seeds` is the policy's `max` (the bound)."""
        if self.refine is None:
            return [resolve_cell(self, line) for line in self.lines]
        axis, ends = self.refine.axis, self.refine.range
        return [
            resolve_cell(self, {**line, axis: snap(axis, x, line, self)})
            for line in self.lines
            for x in ends
        ]

    @property
    def runs_total(self) -> int:
        return sum(cell.seeds for cell in self.cells)


def snap(axis: str, x: float, line: dict[str, Any], spec: JobSpec) -> float | int:
    """The nearest value of `axis` to `x` that a cell can take: a whole number on an integer
    axis (an even one for width), a multiple of 1/n for d_over_n (d is whole)."""
    if axis == "width":
        return max(2, 2 * round(x / 2))
    if axis in INTEGER_AXES:
        return max(1, round(x))
    if axis == "d_over_n":
        n = line.get("n", spec.n)
        return max(1, round(x * n)) / n if isinstance(n, int) else x
    return x


def resolve_cell(spec: JobSpec, point: dict[str, Any]) -> Cell:
    """The cell of `spec` at `point` (axis -> value, derived axes allowed), every parameter
    resolved; ValueError naming the field if a value is out of range."""
    base = spec.model_dump(include=set(CELL_AXES))
    if isinstance(spec.seeds, SeedsPolicy):
        base["seeds"] = spec.seeds.max
    if "num_corrupt" in point or spec.num_corrupt is not None:
        base["corruption_rate"] = None
    values = {**base, **{k: v for k, v in point.items() if k in CELL_AXES}}
    where = f" (grid cell {point})" if point else ""
    n = values.get("n")
    if n is None:
        raise ValueError(f"n is required: give it at top level or as a grid axis{where}")
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError(f"n must be an integer (got {n!r}){where}")
    if "d_over_n" in point:
        d_exact = n * float(point["d_over_n"])
        values["d"] = round(d_exact)
        if not math.isclose(values["d"], d_exact, rel_tol=1e-9) or values["d"] < 1:
            raise ValueError(f"d_over_n * n must be a whole number >= 1 (got {d_exact}){where}")
    if values.get("d") is None:
        raise ValueError(
            f"d is required: give it at top level or as grid axis d or d_over_n{where}"
        )
    if "gamma_times_n" in point:
        values["gamma"] = float(point["gamma_times_n"]) / n
    width, d = values["width"], values["d"]
    if isinstance(width, int) and isinstance(d, int) and width > 0 and d > 0:
        # `is None`, not `or`: an explicit 0 (say in a grid) must reach the validator.
        if values["init_scale"] is None:
            values["init_scale"] = 1.0 / (width * math.sqrt(d))
        if values["lr"] is None:
            values["lr"] = 1.0 / (width * n)
    try:
        return Cell.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'cell'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{problems}{where}") from None
