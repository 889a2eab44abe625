"""The drivers of a rebalance and the constants that tune the problem.

A *driver* is one reason to trade. Each has a nonnegative weight; weight 0 switches it off.

- ``drift``: bring the weights back to target (squared deviation, plus a linear penalty beyond
  the policy band so a breach is always traded back to the band edge). With a factor risk model
  the squared deviation is the *specific* part (each security's own variance, and the shared
  variance of a substitute group); the systematic part is ``risk``.
- ``risk``: the tracking error of the active weights under the factor model's factors,
  ||L^T a||^2. No factor model: the term is 0 and the driver changes nothing.
- ``cost``: linear transaction cost (half spread + commission per share).
- ``tax``: realized gains cost tax, realized losses pay (harvesting).
- ``cash``: the cash reserve *and* the drag of cash above what the account should hold. Off means
  the reserve is relaxed to "no worse than today" and idle cash costs nothing.
- ``restrictions``: restricted securities are neither bought nor sold, "never buy" securities
  are not bought. Off means they trade freely (used by the explainer to measure what the
  restriction changed).
- ``esg``: securities the client's ESG screen excludes are not bought and their target is 0 (the
  snapshot's `targets`). Off means the screen is lifted: the targets before the screen
  (`targets_before_esg`) and no ban, which is how the explainer measures what the screen changed.

Objective drivers (drift, risk, cost, tax, cash drag) are weights; constraint drivers (the
reserve, restrictions, the ESG screen) are on/off bounds. All are Parameters of the compiled
problem, so switching a driver never recompiles. (The household problem adds ``location``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

DRIVERS: tuple[str, ...] = ("drift", "risk", "cost", "tax", "cash", "restrictions", "esg")

#: Drivers that are hard constraints in a proposal: `propose` refuses to switch them off.
CONSTRAINT_DRIVERS: frozenset[str] = frozenset({"cash", "restrictions", "esg"})

#: Default weights. drift 1 and tax 1 mean a unit of tax (as a fraction of the account) is worth
#: as much as a squared weight deviation of the same size; cash drag is a small nudge to invest
#: idle cash, never a reason to overweight a position materially.
DEFAULT_DRIVER_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"drift": 1.0, "risk": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3, "restrictions": 1.0, "esg": 1.0}
)


@dataclass(frozen=True)
class Tuning:
    """Constants of the formulation; part of the optimizer version (see `version.py`)."""

    #: Linear penalty per unit weight beyond the policy band. Above every tax rate, so a band
    #: breach is always traded back at least to the band edge whatever the tax.
    band_penalty: float = 1.0
    #: Weight of the always-on regularizer eps * sum(t_i^2 / tau_i), tau_i = max(target_i, tau_min):
    #: makes the optimum unique and the all-drivers-off trade exactly zero; the 1/tau scaling makes
    #: a cash-only deployment follow the target mix.
    regularization: float = 1e-6
    tau_min_weight: float = 0.01
    #: Tiny linear cost per unit weight traded: a sell and a buy of the same security never
    #: coexist for nothing, and among equal lots the higher-basis lot is sold first.
    tie_break: float = 1e-7
    #: Orders below this notional are dropped when rounding.
    min_trade_usd: float = 50.0
    #: A lot sale within this many shares of the whole lot sells the whole lot (fractions included).
    whole_lot_tol_shares: float = 1e-6


DEFAULT_TUNING = Tuning()


def validate_weights(driver_weights: Mapping[str, float]) -> dict[str, float]:
    """Weights for every driver: unknown names and negatives are errors; missing drivers are off
    (so a dict written before `risk` and `esg` existed switches them off: read recorded weights
    with `recorded_weights`)."""
    unknown = set(driver_weights) - set(DRIVERS)
    if unknown:
        raise ValueError(f"unknown drivers: {sorted(unknown)}; known: {list(DRIVERS)}")
    out: dict[str, float] = {}
    for name in DRIVERS:
        value = float(driver_weights.get(name, 0.0))
        if not value >= 0.0:  # also rejects NaN
            raise ValueError(f"driver weight {name}={value} must be nonnegative")
        out[name] = value
    return out


def recorded_weights(recorded: Mapping[str, float] | None) -> dict[str, float]:
    """The weights a recorded proposal was solved with. Proposals of formulation 3 and before
    have no ``risk`` (the factor term was weighted by ``drift``) and no ``esg`` (there was no
    screen): both are read as they behaved then."""
    merged = dict(DEFAULT_DRIVER_WEIGHTS if recorded is None else recorded)
    if recorded is not None:
        merged.setdefault("risk", float(merged.get("drift", 0.0)))
        merged.setdefault("esg", 1.0)
    return validate_weights(merged)


def proposal_weights(overrides: Mapping[str, float] | None) -> dict[str, float]:
    """The defaults with `overrides` applied; constraint drivers must stay on in a proposal."""
    merged = dict(DEFAULT_DRIVER_WEIGHTS)
    merged.update(overrides or {})
    weights = validate_weights(merged)
    off = sorted(d for d in CONSTRAINT_DRIVERS if weights[d] <= 0.0)
    if off:
        raise ValueError(f"a proposal cannot switch off constraint drivers: {off}")
    return weights
