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
    seeds: int = Field(1, ge=1, description="runs per cell")
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
    def _cells_resolve(self) -> JobSpec:
        _ = self.cells  # every cell must be valid at submission, not when a worker picks it up
        return self

    @property
    def axes(self) -> list[str]:
        return list(self.grid or {})

    @cached_property
    def cells(self) -> list[Cell]:
        """The cartesian product of the grid axes, in axis order, every parameter resolved."""
        grid = self.grid or {}
        combos = itertools.product(*grid.values()) if grid else [()]
        return [_resolve_cell(self, dict(zip(grid, combo, strict=True))) for combo in combos]

    @property
    def runs_total(self) -> int:
        return sum(cell.seeds for cell in self.cells)


def _resolve_cell(spec: JobSpec, point: dict[str, Any]) -> Cell:
    base = spec.model_dump(include=set(CELL_AXES))
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
