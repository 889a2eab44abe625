"""Why each trade: exact Shapley values of the trades over the drivers.

The game: a coalition S of drivers is "on", the others are switched off (weight 0 for objective
drivers; relaxed bounds for the reserve and restrictions, see `drivers.py`), and the value of S
is the continuous trade vector ``solve_trades(inp, weights restricted to S)`` in shares. Every
coalition re-solves the *same* compiled problem (only Parameters change), so 2^K coalitions cost
2^K solves, not compiles. The background (all drivers off) trades nothing because of the
always-on regularizer, so the Shapley values of a trade add up to the trade itself (efficiency),
which `explain` checks and refuses to break.

`shap`'s exact explainer does the combinatorics; the value function memoizes coalitions.
`shap` is imported lazily: it is heavy (seconds) and only the explainer service needs it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trimtab.shared.events import (
    AccountSnapshot,
    ExplanationCreated,
    Order,
    RiskAssessed,
    TradeAttribution,
)
from trimtab.shared.money import dec

from .drivers import DEFAULT_DRIVER_WEIGHTS, DEFAULT_TUNING, DRIVERS, Tuning, validate_weights
from .errors import ExplanationFailed
from .inputs import RebalanceInput, from_snapshot
from .narrative import advisor_narrative, client_narrative
from .solve import solve_continuous
from .version import OPTIMIZER_VERSION

#: Relative tolerance of the efficiency check (base + sum of contributions = trade).
EFFICIENCY_RTOL = 1e-6
#: A continuous trade or contribution smaller than this (shares) is not worth explaining, unless
#: the trade became an order.
EXPLAIN_MIN_SHARES = 1e-4
SHARE_PLACES = 6


class ProposalLike(Protocol):
    """What `explain` reads of a proposal: both `Proposal` and the `RebalanceProposed` event fit."""

    proposal_id: uuid.UUID
    account_id: str
    snapshot: AccountSnapshot
    snapshot_hash: str
    est_cost_usd: object
    est_tax_usd: object

    @property
    def orders(self) -> Sequence[Order]: ...


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values of every security's continuous trade, in shares."""

    drivers: tuple[str, ...]
    values: np.ndarray  # (K drivers, n securities)
    base: np.ndarray  # trade with every driver off
    full: np.ndarray  # trade with every driver on
    resolves: int
    coalitions: int


@dataclass(frozen=True)
class TradeExplanation:
    symbol: str
    price_usd: float
    trade_shares: float
    base_shares: float
    contributions_shares: Mapping[str, float]

    @property
    def trade_usd(self) -> float:
        return self.trade_shares * self.price_usd

    @property
    def contributions_usd(self) -> dict[str, float]:
        return {d: v * self.price_usd for d, v in self.contributions_shares.items()}


@dataclass(frozen=True)
class Explanation:
    proposal_id: uuid.UUID
    account_id: str
    snapshot_hash: str
    optimizer_version: str
    method: str
    drivers: tuple[str, ...]
    driver_weights: Mapping[str, float]
    trades: tuple[TradeExplanation, ...]
    resolves: int
    coalitions: int
    elapsed_ms: float
    efficiency_error_shares: float
    narrative_advisor: str
    narrative_client: str


def _coalition_weights(weights: Mapping[str, float], drivers: Sequence[str], on: Sequence[bool]
                       ) -> dict[str, float]:
    out = dict(weights)
    for d, flag in zip(drivers, on, strict=True):
        if not flag:
            out[d] = 0.0
    return out


def shapley_values(
    inp: RebalanceInput,
    driver_weights: Mapping[str, float],
    *,
    drivers: Sequence[str] = DRIVERS,
    tuning: Tuning = DEFAULT_TUNING,
) -> ShapleyResult:
    """Exact Shapley values (via `shap.explainers.Exact`) of the trade over `drivers`.

    Drivers not in `drivers` stay at their weight in every coalition (they belong to the base).
    """
    import shap  # lazy: heavy import, explainer only

    weights = validate_weights(driver_weights)
    drivers = tuple(drivers)
    unknown = set(drivers) - set(DRIVERS)
    if unknown:
        raise ValueError(f"unknown drivers {sorted(unknown)}")
    k = len(drivers)
    memo: dict[tuple[bool, ...], np.ndarray] = {}
    resolves = 0

    def trade(on: tuple[bool, ...]) -> np.ndarray:
        nonlocal resolves
        if on not in memo:
            sol = solve_continuous(inp, _coalition_weights(weights, drivers, on), tuning=tuning)
            resolves += sol.solves
            memo[on] = sol.trade_shares
        return memo[on]

    def value(masks: np.ndarray) -> np.ndarray:
        return np.stack([trade(tuple(bool(v > 0.5) for v in row)) for row in np.atleast_2d(masks)])

    full = trade((True,) * k)
    base = trade((False,) * k)
    if inp.n_securities == 0:  # nothing to attribute (an all-cash account without targets)
        return ShapleyResult(drivers=drivers, values=np.zeros((k, 0)), base=base, full=full,
                             resolves=resolves, coalitions=len(memo))
    masker = shap.maskers.Independent(np.zeros((1, k)), max_samples=1)
    explainer = shap.explainers.Exact(value, masker)
    result = explainer(np.ones((1, k)), silent=True)
    values = np.asarray(result.values, dtype=float).reshape(k, -1)
    return ShapleyResult(drivers=drivers, values=values, base=base, full=full,
                         resolves=resolves, coalitions=len(memo))


def _driver_weights_of(proposal: ProposalLike, override: Mapping[str, float] | None) -> dict[str, float]:
    if override is not None:
        return validate_weights(override)
    recorded = getattr(proposal, "driver_weights", None)
    return validate_weights(recorded if recorded is not None else DEFAULT_DRIVER_WEIGHTS)


def explain(
    proposal: ProposalLike,
    *,
    driver_weights: Mapping[str, float] | None = None,
    risk: RiskAssessed | None = None,
    drivers: Sequence[str] = DRIVERS,
    tuning: Tuning = DEFAULT_TUNING,
) -> Explanation:
    """Attribute the proposal's continuous trades to the drivers and write both narratives.

    `proposal` is a `Proposal` or a `RebalanceProposed` event; its snapshot is re-solved (the
    event carries the full snapshot), under its driver weights when it records them, else the
    defaults. Raises `ExplanationFailed` if efficiency does not hold.
    """
    t0 = time.perf_counter()
    inp = from_snapshot(proposal.snapshot)
    weights = _driver_weights_of(proposal, driver_weights)
    sv = shapley_values(inp, weights, drivers=drivers, tuning=tuning)

    total = sv.base + sv.values.sum(axis=0)
    error = np.abs(total - sv.full) if inp.n_securities else np.zeros(1)
    if (error > EFFICIENCY_RTOL * np.maximum(1.0, np.abs(sv.full))).any():
        raise ExplanationFailed(
            f"efficiency violated: max |base + sum - trade| = {error.max():.3e} shares",
            proposal_id=str(proposal.proposal_id))

    ordered = {o.symbol for o in proposal.orders}
    trades = tuple(
        TradeExplanation(
            symbol=sym, price_usd=float(inp.price_usd[i]), trade_shares=float(sv.full[i]),
            base_shares=float(sv.base[i]),
            contributions_shares={d: float(sv.values[j, i]) for j, d in enumerate(sv.drivers)},
        )
        for i, sym in enumerate(inp.symbols)
        # Also a security with no trade whose drivers cancel (a restricted one held at zero):
        # what was prevented is part of the explanation.
        if sym in ordered or abs(sv.full[i]) > EXPLAIN_MIN_SHARES
        or np.abs(sv.values[:, i]).max(initial=0.0) > EXPLAIN_MIN_SHARES
    )
    advisor = advisor_narrative(inp, proposal, trades, risk)
    client = client_narrative(inp, proposal, trades, risk)
    return Explanation(
        proposal_id=proposal.proposal_id, account_id=proposal.account_id,
        snapshot_hash=proposal.snapshot_hash, optimizer_version=OPTIMIZER_VERSION,
        method=_method(), drivers=sv.drivers, driver_weights=weights, trades=trades,
        resolves=sv.resolves, coalitions=sv.coalitions,
        elapsed_ms=(time.perf_counter() - t0) * 1e3, efficiency_error_shares=float(error.max()),
        narrative_advisor=advisor, narrative_client=client,
    )


def _method() -> str:
    import shap

    return f"shapley-exact/shap-{shap.__version__}"


def explanation_payload(explanation: Explanation, *, explanation_id: uuid.UUID | None = None
                        ) -> ExplanationCreated:
    """The `ExplanationCreated` event payload (shares as Decimals, 6 places).

    The default id is deterministic in (proposal, snapshot, version): a redelivered proposal
    explains to the same id.
    """
    eid = explanation_id or uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"trimtab:explanation:{explanation.proposal_id}:{explanation.snapshot_hash}:{explanation.optimizer_version}")
    return ExplanationCreated(
        explanation_id=eid, proposal_id=explanation.proposal_id, account_id=explanation.account_id,
        snapshot_hash=explanation.snapshot_hash, optimizer_version=explanation.optimizer_version,
        method=explanation.method, drivers=list(explanation.drivers),
        trades=[
            TradeAttribution(
                symbol=t.symbol, trade_shares=dec(t.trade_shares, SHARE_PLACES),
                base_shares=dec(t.base_shares, SHARE_PLACES),
                contributions_shares={d: dec(v, SHARE_PLACES) for d, v in t.contributions_shares.items()},
            )
            for t in explanation.trades
        ],
        resolves=explanation.resolves, narrative_advisor=explanation.narrative_advisor,
        narrative_client=explanation.narrative_client,
    )


def warm_up_explainer() -> None:
    """Import shap and JIT its exact explainer once (seconds), e.g. when a service starts."""
    import shap

    masker = shap.maskers.Independent(np.zeros((1, 2)), max_samples=1)
    shap.explainers.Exact(lambda x: np.asarray(x, dtype=float), masker)(np.ones((1, 2)), silent=True)

