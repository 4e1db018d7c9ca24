"""What a finished run reports: fit, margins, norms, test error, baseline and theory."""

from __future__ import annotations

from typing import Any

import torch

from bo_engine.baselines import max_margin
from bo_engine.data import TrainSet, make_test_set
from bo_engine.model import network_output
from bo_engine.spec import Cell, TheoryRule
from bo_engine.theory import theory


def fit_metrics(y: torch.Tensor, f: torch.Tensor) -> dict[str, float]:
    """Train loss (summed hinge), train error, margin min_i y_i f(x_i); f counts 0 as wrong."""
    yf = y * f
    return {
        "train_loss": float(torch.clamp(1 - yf, min=0).sum()),
        "train_error": float((yf <= 0).double().mean()),
        "margin": float(yf.min()),
    }


def run_result(
    cell: Cell,
    seed: int,
    train: TrainSet,
    w: torch.Tensor,
    f_train: torch.Tensor,
    steps: int,
    stop_reason: str,
    *,
    max_margin_baseline: bool,
    rule: TheoryRule,
    trajectory: list[dict[str, float]] | None,
) -> dict[str, Any]:
    """One run's result. `w` (width, d) float64; `f_train` the outputs the stop rule saw."""
    y = train.y.to(f_train.device, f_train.dtype)
    fit = fit_metrics(y, f_train)
    yf = y * f_train
    weight_norm = float(w.norm())
    x_test, clean_test = make_test_set(cell, seed, train.v)
    device = w.device
    f_test = network_output(w, x_test.to(device), cell.alpha)
    v = train.v.to(device)
    w_v = w @ v
    signal_norm = float(w_v.norm())
    noise_norm = float((w - torch.outer(w_v, v)).norm())  # ||W (I - v v^T)||_F, no cancellation
    corrupted = train.corrupted.to(yf.device)
    result: dict[str, Any] = {
        "seed": seed,
        "steps": steps,
        "stop_reason": stop_reason,
        "interpolated": bool((yf > 0).all()),
        "zero_loss": bool((yf >= 1).all()),
        **fit,
        "test_error": float((torch.sign(f_test).cpu() != clean_test).double().mean()),
        "normalized_margin": fit["margin"] / weight_norm if weight_norm > 0 else None,
        "weight_norm": weight_norm,
        "corrupt_fit_fraction": (
            float((yf[corrupted] > 0).double().mean()) if bool(corrupted.any()) else None
        ),
        "param_snr": signal_norm / noise_norm if noise_norm > 0 else None,
        "max_margin": None,
        "theory": theory(cell, rule),
    }
    if max_margin_baseline:
        baseline = max_margin(train.x, train.y, x_test, clean_test)
        baseline["margin_ratio"] = weight_norm / baseline["norm"] if baseline["norm"] else None
        result["max_margin"] = baseline
    if trajectory is not None:
        if not trajectory or trajectory[-1]["step"] != steps:
            trajectory.append(trajectory_point(steps, fit, weight_norm))
        result["trajectory"] = trajectory
    return result


def trajectory_point(
    step: int, fit: dict[str, float], weight_norm: float
) -> dict[str, float | None]:
    return {
        "step": step,
        **fit,
        "normalized_margin": fit["margin"] / weight_norm if weight_norm > 0 else None,
        "weight_norm": weight_norm,
    }
