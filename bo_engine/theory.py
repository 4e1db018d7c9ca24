"""Where the paper's theory places a cell: the benign and harmful regimes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bo_engine.spec import Cell, TheoryRule


def theory(cell: Cell, rule: TheoryRule) -> dict[str, Any]:
    """gamma*n, d/n, gamma*d/alpha^3 and the regime they suggest under `rule` (see TheoryRule)."""
    gamma_n = cell.gamma * cell.n
    gamma_d_over_alpha3 = cell.gamma * cell.d / cell.alpha**3
    if gamma_n >= rule.benign_gamma_n and cell.d_over_n >= rule.benign_d_over_n:
        hint = "benign"
    elif gamma_d_over_alpha3 <= rule.harmful_gamma_d_over_alpha3:
        hint = "harmful"
    else:
        hint = "intermediate"
    return {
        "gamma_n": gamma_n,
        "d_over_n": cell.d_over_n,
        "gamma_d_over_alpha3": gamma_d_over_alpha3,
        "regime_hint": hint,
    }



def regime_ratios(params: Mapping[str, Any], rule: TheoryRule) -> dict[str, float]:
    """How far a cell is from the paper's curves, as ratios that equal 1 on them: benign needs
    gamma n / benign_gamma_n >= 1 (gamma = c/n), harmful gamma d / alpha^3 /
    harmful_gamma_d_over_alpha3 <= 1 (gamma = c alpha^3/d). Both are power laws in every
    parameter, so they interpolate exactly on log axes."""
    gamma, n, d, alpha = params["gamma"], params["n"], params["d"], params["alpha"]
    return {
        "benign": gamma * n / rule.benign_gamma_n,
        "harmful": gamma * d / alpha**3 / rule.harmful_gamma_d_over_alpha3,
    }
