"""What a finished run reports: fit, margins, norms, test error, baseline and theory."""

from __future__ import annotations

import math
from typing import Any

import torch

from bo_engine.baselines import max_margin_dual
from bo_engine.chunks import Checkpoint, no_checkpoint
from bo_engine.data import TrainSet, draw_test_outputs_of
from bo_engine.model import leaky_relu, outer_weights
from bo_engine.products import RunData, WeightMoments
from bo_engine.spec import Cell, TheoryRule
from bo_engine.theory import theory


def stop_reason(reached: bool, rule: str, out_of_steps: bool, cancelled: bool) -> str:
    if reached:
        return "zero_loss" if rule == "zero_loss" else "interpolated"
    return "max_steps" if out_of_steps or not cancelled else "cancelled"


def gram_weight_norms(
    w0_sq: torch.Tensor, c: torch.Tensor, z0: torch.Tensor, gram: torch.Tensor
) -> torch.Tensor:
    """||W||_F of W = W0 + C X without forming W: ||W0||^2 + 2 <C, Z0> + <C, C G>, over the
    last two dims of C (width, n), Z0 = W0 X^T and G = X X^T."""
    cross = (c * z0).sum((-2, -1))
    quad = (c * (c @ gram)).sum((-2, -1))
    return (w0_sq + 2 * cross + quad).clamp(min=0).sqrt()


def fit_metrics(y: torch.Tensor, f: torch.Tensor) -> dict[str, float]:
    """Train loss (summed hinge), train error, margin min_i y_i f(x_i); f counts 0 as wrong."""
    yf = y * f
    return {
        "train_loss": float(torch.clamp(1 - yf, min=0).sum()),
        "train_error": float((yf <= 0).double().mean()),
        "margin": float(yf.min()),
    }


def misclassified(outputs: torch.Tensor, clean: torch.Tensor) -> float:
    """Share of points whose sign(output) is not the clean label (an output of 0 is wrong)."""
    return float((torch.sign(outputs) != clean).double().mean())


def run_result(
    cell: Cell,
    seed: int,
    train: TrainSet,
    w: torch.Tensor,
    f_train: torch.Tensor,
    steps: int,
    stop_reason: str,
    **kwargs: Any,
) -> dict[str, Any]:
    """`products_result` for an explicit training set and W (width, d) float64."""
    c = torch.zeros(w.shape[0], train.x.shape[0], dtype=torch.float64)
    data = RunData.from_explicit(train, w)
    return products_result(cell, seed, data, c, f_train, steps, stop_reason, **kwargs)


def products_result(
    cell: Cell,
    seed: int,
    data: RunData,
    c: torch.Tensor,
    f_train: torch.Tensor,
    steps: int,
    stop_reason: str,
    *,
    max_margin_baseline: bool,
    rule: TheoryRule,
    trajectory: list[dict[str, float]] | None,
    check: Checkpoint = no_checkpoint,
) -> dict[str, Any]:
    """One run's result, from its products and C (width, n) (W = W(0) + C X); `f_train` the
    outputs the stop rule saw; `check()` between the stages of the baseline (a stop raises
    `Stopped` from there)."""
    y = data.y.to(f_train.device, f_train.dtype)
    fit = fit_metrics(y, f_train)
    yf = y * f_train
    c = c.cpu().double()
    beta = max_margin_dual(data.gram, data.y, check) if max_margin_baseline else None
    moments = WeightMoments.of(data, c, beta)
    weight_norm = moments.weight_norm()
    u = None
    if beta is not None:
        u = (moments.u_v, moments.u_sq - moments.u_v**2, moments.w_u - moments.w_v * moments.u_v)
    pre_test, lin_test, clean_test = draw_test_outputs_of(
        cell, seed, moments.w_v, moments.projected_gram(), u
    )
    f_test = leaky_relu(pre_test, cell.alpha) @ outer_weights(cell.width)
    signal_norm = float(moments.w_v.norm())
    noise_norm = moments.noise_norm()
    corrupted = data.corrupted.to(yf.device)
    result: dict[str, Any] = {
        "seed": seed,
        "steps": steps,
        "stop_reason": stop_reason,
        "interpolated": bool((yf > 0).all()),
        "zero_loss": bool((yf >= 1).all()),
        **fit,
        "test_error": misclassified(f_test, clean_test),
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
        norm = math.sqrt(max(moments.u_sq, 0.0)) if beta is not None else None
        result["max_margin"] = {
            "norm": norm,
            "test_error": misclassified(lin_test, clean_test) if lin_test is not None else None,
            "separable": beta is not None,
            "margin_ratio": weight_norm / norm if norm else None,
        }
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
