"""The objective's terms evaluated in plain numpy, for any trade list.

The solver only returns the optimum of the weighted sum; this module says how much each driver
contributes, for the continuous solution and for the rounded orders alike (the proposal reports
both). It is also an independent check of the compiled problem: the tests compare its total
with the solver's objective value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .drivers import Tuning
from .inputs import RebalanceInput

TERMS: tuple[str, ...] = ("drift", "risk", "cost", "tax", "cash", "regularization")


def _tuned(inp: RebalanceInput, tuning: Tuning) -> dict[str, np.ndarray]:
    """The values of `inp` under `tuning` computed so far (`reg_tau`, `lot_tie_break`): kept in
    the input (like its cached properties) for the last tuning it was used with. Keyed on that
    Tuning object itself, which is frozen, so its values cannot change while it is the key; an
    equal Tuning built anew computes them again. The arrays are read-only."""
    got = inp.__dict__.get("_tuned")
    if got is None or got[0] is not tuning:
        got = inp.__dict__["_tuned"] = (tuning, {})
    return got[1]


def reg_tau(inp: RebalanceInput, tuning: Tuning) -> np.ndarray:
    """tau_i of the regularizer: the target weight, floored so untargeted securities still trade."""
    tuned = _tuned(inp, tuning)
    out = tuned.get("reg_tau")
    if out is None:
        out = tuned["reg_tau"] = np.maximum(inp.target_weight, tuning.tau_min_weight)
        out.setflags(write=False)
    return out


def lot_tie_break(inp: RebalanceInput, tuning: Tuning) -> np.ndarray:
    """Per-lot tie-break cost, lower for higher basis (among otherwise equal lots, sell HIFO)."""
    tuned = _tuned(inp, tuning)
    out = tuned.get("lot_tie_break")
    if out is None:
        gain_fraction = 1.0 - inp.lot_basis_usd_per_share / inp.lot_price_usd
        out = tuned["lot_tie_break"] = tuning.tie_break * (1.5 + 0.5 * np.clip(gain_fraction, -1.0, 1.0))
        out.setflags(write=False)
    return out


def trade_weight(inp: RebalanceInput, sell_shares: np.ndarray, buy_shares: np.ndarray) -> np.ndarray:
    sold = np.bincount(inp.lot_security, weights=sell_shares, minlength=inp.n_securities)
    return (buy_shares - sold) * inp.price_usd / inp.value_usd


def linear_cost_weight(inp: RebalanceInput, sell_shares: np.ndarray, buy_shares: np.ndarray) -> float:
    """Half spread plus commission of the trade list, as a fraction of V0."""
    buy_w = buy_shares * inp.price_usd / inp.value_usd
    sell_w = sell_shares * inp.lot_price_usd / inp.value_usd
    return float(inp.cost_rate @ buy_w + inp.lot_cost_rate @ sell_w)


def active_risk(inp: RebalanceInput, a: np.ndarray) -> float:
    """a^T (L L^T + diag(d)) a in factor form; ||a||^2 without a risk model."""
    fa = inp.loadings.T @ a
    return float(fa @ fa + (inp.specific * a) @ a)


def systematic_risk(inp: RebalanceInput, a: np.ndarray) -> float:
    """||L_model^T a||^2: the factor model's part of `active_risk` (the "risk" driver's term)."""
    fa = inp.model_loadings.T @ a
    return float(fa @ fa)


def weighted_drift(inp: RebalanceInput, a: np.ndarray, weights: Mapping[str, float], tuning: Tuning) -> float:
    """drift x (specific and substitute-group variance + band excess) + risk x systematic risk:
    the objective's terms in the active weights `a`."""
    specific = active_risk(inp, a) - (systematic := systematic_risk(inp, a))
    return (weights.get("drift", 0.0) * (specific + tuning.band_penalty * band_excess(inp, a))
            + weights.get("risk", 0.0) * systematic)


def weighted_drift_rows(inp: RebalanceInput, rows: np.ndarray, weights: Mapping[str, float],
                        tuning: Tuning) -> np.ndarray:
    """`weighted_drift` of each row of `rows` (k x n), in one pass."""
    fa = rows @ inp.loadings
    k = inp.risk_model_factors
    systematic = (fa[:, :k] ** 2).sum(axis=1)
    specific = (fa[:, k:] ** 2).sum(axis=1) + ((rows * rows) @ inp.specific)
    M = inp.band_membership
    excess = np.maximum(np.abs(rows[:, inp.ungrouped]) - inp.ungrouped_band, 0.0).sum(axis=1) \
        + np.maximum(np.abs(rows @ M) - inp.group_band, 0.0).sum(axis=1)
    return (weights.get("drift", 0.0) * (specific + tuning.band_penalty * excess)
            + weights.get("risk", 0.0) * systematic)


def band_excess(inp: RebalanceInput, a: np.ndarray) -> float:
    """Deviation beyond the band: per security, or per substitute group for its members."""
    M = inp.band_membership
    single = np.maximum(np.abs(a[inp.ungrouped]) - inp.ungrouped_band, 0.0).sum()
    group = np.maximum(np.abs(M.T @ a) - inp.group_band, 0.0).sum()
    return float(single + group)


def impact_weight(inp: RebalanceInput, t: np.ndarray) -> float:
    """Market impact b sigma sqrt(V0 / ADV) |t|^(3/2), as a fraction of V0."""
    return float(inp.impact @ np.abs(t) ** 1.5)


def evaluate(
    inp: RebalanceInput,
    weights: Mapping[str, float],
    sell_shares: np.ndarray,
    buy_shares: np.ndarray,
    tuning: Tuning,
) -> dict[str, float]:
    """Weighted value of every term, and their `total`, in fractions of V0 (see `problem.py`)."""
    V0 = inp.value_usd
    t = trade_weight(inp, sell_shares, buy_shares)
    a = inp.pre_weight + t - inp.target_weight
    systematic = systematic_risk(inp, a)
    drift = active_risk(inp, a) - systematic + tuning.band_penalty * band_excess(inp, a)
    sell_w = sell_shares * inp.lot_price_usd / V0
    buy_w = buy_shares * inp.price_usd / V0
    # `linear_cost_weight` on the weights above (the same operations, not computed twice).
    cost = float(inp.cost_rate @ buy_w + inp.lot_cost_rate @ sell_w) + impact_weight(inp, t)
    tax = float(inp.lot_tax_objective @ sell_w)
    # Idle cash before costs, as in the problem (costs never count as "investing" cash).
    idle = max(inp.cash_weight - float(t.sum()) - inp.cash_target_weight, 0.0)
    reg = (tuning.regularization * float((t * t / reg_tau(inp, tuning)).sum())
           + float(lot_tie_break(inp, tuning) @ sell_w) + tuning.tie_break * float(buy_w.sum()))
    terms = {
        "drift": weights.get("drift", 0.0) * drift,
        "risk": weights.get("risk", 0.0) * systematic,
        "cost": weights.get("cost", 0.0) * cost,
        "tax": weights.get("tax", 0.0) * tax,
        "cash": weights.get("cash", 0.0) * idle,
        "regularization": reg,
    }
    terms["total"] = sum(terms.values())
    return terms
