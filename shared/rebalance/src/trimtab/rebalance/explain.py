"""Why each trade: exact Shapley values of the trades over the drivers.

The game: a coalition S of drivers is "on", the others are switched off (weight 0 for objective
drivers; relaxed bounds for the reserve and restrictions, see `drivers.py`), and the value of S
is the continuous trade vector ``solve_trades(inp, weights restricted to S)`` in shares. Every
coalition re-solves the *same* compiled problem (only Parameters change), so 2^K coalitions cost
2^K solves, not compiles. The background (all drivers off) trades nothing because of the
always-on regularizer, so the Shapley values of a trade add up to the trade itself (efficiency),
which `explain` checks and refuses to break.

The drivers are the optimizer's (`drivers.DRIVERS`: drift, risk, cost, tax, cash, restrictions,
esg). Switching off "esg" lifts the screen: the coalition solves the input with the targets
before the screen and no ESG ban (`RebalanceInput.without_esg`). The optimizer has one tax term, sum over lots of g_tax * tax_i * sold_i, whose
coefficient is negative for a harvestable loss and positive for a gain. `EXPLAIN_DRIVERS` splits
it into its two halves, ``tax_losses`` (the benefit of harvesting losses) and ``tax_gains`` (the
cost of realizing gains): switching one off zeroes that half of the coefficient vector
(`_TaxTermMasked`), both off is g_tax = 0, both on is the optimizer's own term. Every other
coefficient, bound and the tax-budget row are untouched, so each coalition is still the real
problem with a term removed (same compiled problem, same solve path). `DRIVERS` (tax whole)
stays available.

`shap`'s exact explainer does the combinatorics; the value function memoizes coalitions.
`shap` is imported lazily: it is heavy (seconds) and only the explainer service needs it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from trimtab.shared.events import (
    AccountSnapshot,
    ExplanationCreated,
    Order,
    RiskAssessed,
    TradeAttribution,
)
from trimtab.shared.money import dec

from .drivers import DEFAULT_TUNING, DRIVERS, Tuning, recorded_weights, validate_weights
from .errors import ExplanationFailed
from .inputs import RebalanceInput, from_snapshot
from .narrative import advisor_narrative, client_narrative, wash_sale_status
from .solve import solve_continuous
from .version import OPTIMIZER_VERSION

if TYPE_CHECKING:
    from .context import RebalanceContext
    from .counterfactual import Counterfactual

#: Relative tolerance of the efficiency check (base + sum of contributions = trade).
EFFICIENCY_RTOL = 1e-6
#: A continuous trade or contribution smaller than this (shares) is not worth explaining, unless
#: the trade became an order.
EXPLAIN_MIN_SHARES = 1e-4
SHARE_PLACES = 6

#: The key of `explanation_details` that lists the explained drivers (never a symbol).
DETAILS_DRIVERS = "_drivers"
#: The two halves of the optimizer's tax term, explained as two drivers.
TAX_PARTS: tuple[str, str] = ("tax_losses", "tax_gains")
#: The drivers the explainer service attributes to (the optimizer's, tax split in two). Drivers
#: that cannot matter for an account (no factor model: risk; nothing screened: esg; nothing
#: restricted: restrictions) are structurally null and cost no solve (`structurally_null`).
EXPLAIN_DRIVERS: tuple[str, ...] = ("drift", "risk", "cost", "tax_losses", "tax_gains", "cash",
                                    "restrictions", "esg")


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
    #: coalitions valued without a solve (`prune`): provably no trade, or equal to another
    skipped: int = 0
    #: the optimizer's notes of the all-on solve (wash-sale resolutions)
    notes: tuple[str, ...] = ()
    #: with the tax split: the same game over the optimizer's drivers (tax whole), valued from
    #: the same solves (its coalitions are those with both halves equal): (drivers, values)
    merged: tuple[tuple[str, ...], np.ndarray] | None = None


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
    #: coalitions valued without a solve (`prune`: provably idle, or equal to another)
    skipped_coalitions: int = 0
    #: solving and attributing only (what the bench's budget is about), without narratives
    attribution_ms: float = 0.0
    #: per symbol: what would have had to differ for the order not to happen (see counterfactual.py)
    counterfactuals: Mapping[str, tuple[Counterfactual, ...]] = field(default_factory=dict)
    counterfactual_resolves: int = 0
    #: per symbol with an order: its wash-sale status in words
    wash_sale: Mapping[str, str] = field(default_factory=dict)
    #: the optimizer's notes of the all-drivers-on solve
    notes: tuple[str, ...] = ()
    #: with the tax split: the attribution over the optimizer's own drivers (tax whole), from
    #: the same solves. It is what the `ExplanationCreated` event carries (see
    #: `explanation_payload`): what `explain(proposal)` replays.
    optimizer_drivers: tuple[str, ...] = ()
    optimizer_trades: tuple[TradeExplanation, ...] = ()


@dataclass(frozen=True, eq=False)
class _TaxTermMasked(RebalanceInput):
    """The input with part of the tax term's coefficient zeroed (one half of the tax driver off).

    Only `lot_tax_objective` (the objective's coefficient) changes; the tax-budget and gain-cap
    rows use `lot_tax_per_weight` / `lot_gain_per_weight`, which stay as they are.
    """

    tax_term_keep: np.ndarray | None = None

    @cached_property
    def lot_tax_objective(self) -> np.ndarray:  # type: ignore[override]
        full = RebalanceInput.lot_tax_objective.func(self)  # type: ignore[attr-defined]
        out = np.where(self.tax_term_keep, full, 0.0) if self.tax_term_keep is not None else full
        out.setflags(write=False)
        return out


def _masked(inp: RebalanceInput, keep: np.ndarray) -> RebalanceInput:
    if not isinstance(RebalanceInput.__dict__.get("lot_tax_objective"), cached_property):
        raise ExplanationFailed("the optimizer's tax term moved: the tax split cannot be applied")
    values = {f.name: getattr(inp, f.name) for f in fields(RebalanceInput)}
    return _TaxTermMasked(**values, tax_term_keep=keep)


class _Coalitions:
    """Maps a coalition (on/off per explained driver) to the weights and input it solves."""

    def __init__(self, inp: RebalanceInput, weights: Mapping[str, float], drivers: Sequence[str],
                 follow: Mapping[str, str] | None = None):
        self.inp, self.weights, self.drivers = inp, dict(weights), tuple(drivers)
        self.follow = dict(follow or {})
        self._variants: dict[tuple[str, bool], RebalanceInput] = {}

    def _variant(self, tax: str, esg_on: bool) -> RebalanceInput:
        """The input of a coalition: the ESG screen lifted when esg is off (its targets before
        the screen), one half of the tax term masked when only the other half is on."""
        key = (tax, esg_on)
        if key not in self._variants:
            base = self.inp if esg_on else self.inp.without_esg()
            if tax == "whole":
                self._variants[key] = base
            else:
                coef = RebalanceInput.lot_tax_objective.func(base)  # type: ignore[attr-defined]
                self._variants[key] = _masked(base, coef < 0 if tax == "losses" else coef > 0)
        return self._variants[key]

    def __call__(self, on: Sequence[bool]) -> tuple[dict[str, float], RebalanceInput]:
        w = dict(self.weights)
        state = dict(zip(self.drivers, on, strict=True))
        for d, flag in state.items():
            if not flag and d in w:
                w[d] = 0.0
        for d, leader in self.follow.items():  # switched with its leader (see `shapley_values`)
            if not state.get(leader, True):
                w[d] = 0.0
        esg_on = state.get("esg", True)
        losses, gains = state.get("tax_losses", True), state.get("tax_gains", True)
        if not losses and not gains:
            w["tax"] = 0.0
        tax = "whole" if losses == gains else ("losses" if losses else "gains")
        return w, self._variant(tax, esg_on)


def exact_shapley(trade: Callable[[tuple[bool, ...]], np.ndarray], k: int) -> np.ndarray:
    """Exact Shapley values (K, n) of the vector game `trade(coalition)` by `shap.explainers.Exact`.

    The background is the empty coalition; `trade` should memoize (shap asks for each coalition
    once per call, but callers reuse values).
    """
    import shap  # lazy: heavy import, explainer only

    def value(masks: np.ndarray) -> np.ndarray:
        return np.stack([trade(tuple(bool(v > 0.5) for v in row)) for row in np.atleast_2d(masks)])

    masker = shap.maskers.Independent(np.zeros((1, k)), max_samples=1)
    explainer = shap.explainers.Exact(value, masker)
    result = explainer(np.ones((1, k)), silent=True)
    return np.asarray(result.values, dtype=float).reshape(k, -1)


#: The drivers that can make the optimizer trade at all. With all of them off, what is left
#: (costs, the tax of gains, the tie-break, the always-on regularizer) is nonnegative and zero
#: only at "no trade", which is feasible (the reserve is relaxed to "no worse than today" when
#: cash is off): the optimum is exactly no trade, whatever restrictions, screens (targets no
#: longer matter) and costs do. The harvesting motive is "tax" or its "tax_losses" half.
_MOTIVES: tuple[str, ...] = ("drift", "risk", "cash")


def _provably_idle(inp: RebalanceInput, drivers: Sequence[str], weights: Mapping[str, float],
                   follow: Mapping[str, str] | None = None) -> Callable[[tuple[bool, ...]], bool]:
    """A test of "this coalition's optimum is no trade", or always False when it cannot be known."""
    motives = (*_MOTIVES, "tax" if "tax" in drivers else "tax_losses")
    # A motive that is not a player stays at its weight in every coalition: unless it is off or
    # cannot act on this input, no coalition is provably idle.
    null = structurally_null(inp, motives)
    follow = follow or {}
    fixed = [m for m in motives if m not in drivers and m not in null and follow.get(m) not in drivers
             and weights.get("tax" if m == "tax_losses" else m, 0.0) > 0]
    # A negative tax budget makes "no trade" infeasible: then the optimizer must say so itself.
    if fixed or (inp.tax_budget_usd is not None and inp.tax_budget_usd < 0):
        return lambda on: False
    idx = [i for i, d in enumerate(drivers) if d in motives]
    return lambda on: not any(on[i] for i in idx)


def structurally_null(inp: RebalanceInput, drivers: Sequence[str]) -> frozenset[str]:
    """Drivers whose switch changes no Parameter of any solve for this input: nothing restricted,
    no tax coefficient (of either sign), no trading cost, no factor model, no ESG screen. A
    coalition with such a driver on solves
    the very same problems as without it, so its value is shared, not re-solved (and the driver's
    Shapley value is 0 up to shap's float sums, ~1e-15: the null-player property)."""
    coef = inp.lot_tax_objective
    null = {
        "restrictions": not inp.restricted.any() and not inp.never_buy.any(),
        "risk": not inp.model_loadings.any(),
        # Lifting the screen changes the targets too: null only when they are the same.
        "esg": not inp.esg_excluded.any() and (
            inp.target_weight_without_esg is None
            or np.array_equal(inp.target_weight_without_esg, inp.target_weight)),
        "tax": not coef.any(),
        "tax_losses": not (coef < 0).any(),
        "tax_gains": not (coef > 0).any(),
        "cost": not inp.cost_rate.any() and not inp.impact.any(),
    }
    return frozenset(d for d in drivers if null.get(d, False))


def _check_drivers(drivers: Sequence[str]) -> tuple[str, ...]:
    drivers = tuple(drivers)
    known = set(DRIVERS) | set(TAX_PARTS)
    unknown = set(drivers) - known
    if unknown:
        raise ValueError(f"unknown drivers {sorted(unknown)}")
    if len(set(drivers)) != len(drivers):
        raise ValueError("a driver is listed twice")
    parts = set(drivers) & set(TAX_PARTS)
    if parts and ("tax" in drivers or parts != set(TAX_PARTS)):
        raise ValueError("explain tax whole ('tax') or as both of its halves (tax_losses, tax_gains)")
    return drivers


def shapley_values(
    inp: RebalanceInput,
    driver_weights: Mapping[str, float],
    *,
    drivers: Sequence[str] = DRIVERS,
    tuning: Tuning = DEFAULT_TUNING,
    prune: bool = False,
    follow: Mapping[str, str] | None = None,
) -> ShapleyResult:
    """Exact Shapley values (via `shap.explainers.Exact`) of the trade over `drivers`.

    Drivers not in `drivers` stay at their weight in every coalition (they belong to the base),
    unless `follow` names a player they switch with: ``{"risk": "drift"}`` is the game of
    formulation 3, whose drift term held the factor risk (the audit replay of such records).
    `prune=True` values two kinds of coalitions without a solve, exactly: those whose optimum is
    provably no trade (`_provably_idle`), and those that differ from another only by
    structurally null drivers (`structurally_null`). `resolves` counts the solves made.
    """
    weights = validate_weights(driver_weights)
    drivers = _check_drivers(drivers)
    k = len(drivers)
    follow = {d: leader for d, leader in (follow or {}).items() if d not in drivers and leader in drivers}
    coalition = _Coalitions(inp, weights, drivers, follow)
    memo: dict[tuple[bool, ...], np.ndarray] = {}
    notes: dict[tuple[bool, ...], tuple[str, ...]] = {}
    idle = _provably_idle(inp, drivers, weights, follow) if prune else (lambda on: False)
    null = structurally_null(inp, drivers) if prune else frozenset()
    null_idx = [i for i, d in enumerate(drivers) if d in null]
    resolves = skipped = 0

    def trade(on: tuple[bool, ...]) -> np.ndarray:
        nonlocal resolves, skipped
        if on in memo:
            return memo[on]
        if null_idx and any(on[i] for i in null_idx):
            same = tuple(False if i in null_idx else f for i, f in enumerate(on))
            skipped += 1
            memo[on] = trade(same)
            notes[on] = notes[same]
            return memo[on]
        if idle(on) and any(on):  # the empty coalition is always solved
            skipped += 1
            memo[on], notes[on] = np.zeros(inp.n_securities), ()
        if on not in memo:
            w, variant = coalition(on)
            sol = solve_continuous(variant, w, tuning=tuning)
            resolves += sol.solves
            memo[on], notes[on] = sol.trade_shares, sol.notes
        return memo[on]

    full = trade((True,) * k)
    base = trade((False,) * k)
    if inp.n_securities == 0:  # nothing to attribute (an all-cash account without targets)
        return ShapleyResult(drivers=drivers, values=np.zeros((k, 0)), base=base, full=full,
                             resolves=resolves, coalitions=len(memo), skipped=skipped,
                             notes=notes[(True,) * k])
    values = exact_shapley(trade, k)
    merged = None
    if set(TAX_PARTS) <= set(drivers):
        whole = tuple(d for d in drivers if d != TAX_PARTS[1])
        whole = tuple("tax" if d == TAX_PARTS[0] else d for d in whole)
        fine = [whole.index("tax") if d in TAX_PARTS else whole.index(d) for d in drivers]

        def coarse(on: tuple[bool, ...]) -> np.ndarray:
            return trade(tuple(on[j] for j in fine))

        merged = (whole, exact_shapley(coarse, len(whole)))
    return ShapleyResult(drivers=drivers, values=values, base=base, full=full,
                         resolves=resolves, coalitions=len(memo), skipped=skipped,
                         notes=notes[(True,) * k], merged=merged)


def _driver_weights_of(proposal: ProposalLike, override: Mapping[str, float] | None) -> dict[str, float]:
    if override is not None:
        return validate_weights(override)
    return recorded_weights(getattr(proposal, "driver_weights", None))


def explain(
    proposal: ProposalLike,
    *,
    driver_weights: Mapping[str, float] | None = None,
    risk: RiskAssessed | None = None,
    drivers: Sequence[str] = DRIVERS,
    tuning: Tuning = DEFAULT_TUNING,
    context: RebalanceContext | None = None,
    counterfactuals: bool = False,
    max_counterfactual_orders: int | None = None,
    prune: bool = False,
    follow: Mapping[str, str] | None = None,
) -> Explanation:
    """Attribute the proposal's continuous trades to the drivers and write both narratives.

    `proposal` is a `Proposal` or a `RebalanceProposed` event; its snapshot is re-solved (the
    event carries the full snapshot), under its driver weights when it records them, else the
    defaults, with the `context` it was proposed with (a `Proposal` records the context's hash,
    which must match). `drivers=EXPLAIN_DRIVERS` splits tax into losses and gains.
    `counterfactuals=True` also searches, per order (the largest `max_counterfactual_orders`),
    the band, price and tax rate at which it would not have happened (`counterfactual.py`).
    `prune=True` skips the solves whose result is known exactly (see `shapley_values`).
    Raises `ExplanationFailed` if efficiency does not hold or the context is not the proposal's.
    """
    t0 = time.perf_counter()
    _check_context(proposal, context)
    inp = from_snapshot(proposal.snapshot, context)
    weights = _driver_weights_of(proposal, driver_weights)
    sv = shapley_values(inp, weights, drivers=drivers, tuning=tuning, prune=prune, follow=follow)

    total = sv.base + sv.values.sum(axis=0)
    error = np.abs(total - sv.full) if inp.n_securities else np.zeros(1)
    if (error > EFFICIENCY_RTOL * np.maximum(1.0, np.abs(sv.full))).any():
        raise ExplanationFailed(
            f"efficiency violated: max |base + sum - trade| = {error.max():.3e} shares",
            proposal_id=str(proposal.proposal_id))

    ordered = {o.symbol for o in proposal.orders}
    trades = _trades(inp, sv.drivers, sv.values, sv, ordered)
    opt_drivers, opt_trades = sv.drivers, trades
    if sv.merged is not None:
        opt_drivers = sv.merged[0]
        merr = np.abs(sv.base + sv.merged[1].sum(axis=0) - sv.full) if inp.n_securities else np.zeros(1)
        if (merr > EFFICIENCY_RTOL * np.maximum(1.0, np.abs(sv.full))).any():
            raise ExplanationFailed(f"efficiency violated (optimizer drivers): {merr.max():.3e} shares",
                                    proposal_id=str(proposal.proposal_id))
        opt_trades = _trades(inp, opt_drivers, sv.merged[1], sv, ordered)
        # Every symbol the event names is explained in the detail too.
        trades = _trades(inp, sv.drivers, sv.values, sv, ordered | {t.symbol for t in opt_trades})
    attribution_ms = (time.perf_counter() - t0) * 1e3
    cfs: dict[str, tuple[Counterfactual, ...]] = {}
    cf_resolves = 0
    if counterfactuals:
        from .counterfactual import counterfactuals_for

        cfs, cf_resolves = counterfactuals_for(proposal, inp, weights, context=context, tuning=tuning,
                                               max_orders=max_counterfactual_orders)
    wash = wash_sale_status(inp, proposal.orders, sv.notes, household_known=context is not None
                            and bool(context.recent_trades))
    advisor = advisor_narrative(inp, proposal, trades, risk, counterfactuals=cfs, wash_sale=wash)
    client = client_narrative(inp, proposal, trades, risk, counterfactuals=cfs)
    return Explanation(
        proposal_id=proposal.proposal_id, account_id=proposal.account_id,
        snapshot_hash=proposal.snapshot_hash, optimizer_version=OPTIMIZER_VERSION,
        method=_method(), drivers=sv.drivers, driver_weights=weights, trades=trades,
        resolves=sv.resolves, coalitions=sv.coalitions,
        elapsed_ms=(time.perf_counter() - t0) * 1e3, efficiency_error_shares=float(error.max()),
        narrative_advisor=advisor, narrative_client=client, attribution_ms=attribution_ms,
        skipped_coalitions=sv.skipped,
        counterfactuals=cfs, counterfactual_resolves=cf_resolves, wash_sale=wash, notes=sv.notes,
        optimizer_drivers=opt_drivers, optimizer_trades=opt_trades,
    )


def _trades(inp: RebalanceInput, drivers: tuple[str, ...], values: np.ndarray, sv: ShapleyResult,
            ordered: set[str]) -> tuple[TradeExplanation, ...]:
    return tuple(
        TradeExplanation(
            symbol=sym, price_usd=float(inp.price_usd[i]), trade_shares=float(sv.full[i]),
            base_shares=float(sv.base[i]),
            contributions_shares={d: float(values[j, i]) for j, d in enumerate(drivers)},
        )
        for i, sym in enumerate(inp.symbols)
        # Also a security with no trade whose drivers cancel (a restricted one held at zero):
        # what was prevented is part of the explanation.
        if sym in ordered or abs(sv.full[i]) > EXPLAIN_MIN_SHARES
        or np.abs(values[:, i]).max(initial=0.0) > EXPLAIN_MIN_SHARES
    )


def _check_context(proposal: ProposalLike, context: RebalanceContext | None) -> None:
    """A `Proposal` records its context's hash: explaining it under another context would explain
    something else. (The event does not carry the context: the caller vouches for it.)"""
    recorded = getattr(proposal, "context_hash", None)
    if recorded is None and context is None:
        return
    from trimtab.shared.canonical import canonical_hash

    from .context import EMPTY_CONTEXT

    given = None if context is None or context == EMPTY_CONTEXT else canonical_hash(context.to_json())
    if hasattr(proposal, "context_hash") and given != recorded:
        raise ExplanationFailed("the context given is not the one the proposal was made with",
                                proposal_id=str(proposal.proposal_id))


def explanation_details(explanation: Explanation) -> dict[str, Any]:
    """Per symbol, what the event does not carry: the explained drivers' attribution (six, with
    the tax split) in shares and dollars, counterfactuals, wash-sale status; and, under
    `DETAILS_DRIVERS`, the explained drivers in order. Plain JSON (decimal strings), stored next
    to the event payload by the explainer service.
    """
    out: dict[str, Any] = {DETAILS_DRIVERS: list(explanation.drivers)}
    for t in explanation.trades:
        d: dict[str, Any] = {
            "price_usd": repr(t.price_usd),
            "trade_usd": f"{t.trade_usd:.2f}",
            "contributions_usd": {k: f"{v:.2f}" for k, v in t.contributions_usd.items()},
            "trade_shares": str(dec(t.trade_shares, SHARE_PLACES)),
            "base_shares": str(dec(t.base_shares, SHARE_PLACES)),
            "contributions_shares": {k: str(dec(v, SHARE_PLACES)) for k, v in t.contributions_shares.items()},
        }
        if t.symbol in explanation.counterfactuals:
            d["counterfactuals"] = [c.to_json() for c in explanation.counterfactuals[t.symbol]]
        if t.symbol in explanation.wash_sale:
            d["wash_sale"] = explanation.wash_sale[t.symbol]
        out[t.symbol] = d
    return out


def _method() -> str:
    import shap

    return f"shapley-exact/shap-{shap.__version__}"


def explanation_payload(explanation: Explanation, *, explanation_id: uuid.UUID | None = None
                        ) -> ExplanationCreated:
    """The `ExplanationCreated` event payload (shares as Decimals, 6 places).

    The event carries the attribution over the optimizer's own drivers (tax whole: what
    `explain(proposal)` replays, e.g. in the audit service's replay); with the tax split, the
    six-driver attribution travels in `explanation_details` (stored and served by the explainer).
    The default id is deterministic in (proposal, snapshot, version): a redelivered proposal
    explains to the same id.
    """
    eid = explanation_id or uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"trimtab:explanation:{explanation.proposal_id}:{explanation.snapshot_hash}:{explanation.optimizer_version}")
    return ExplanationCreated(
        explanation_id=eid, proposal_id=explanation.proposal_id, account_id=explanation.account_id,
        snapshot_hash=explanation.snapshot_hash, optimizer_version=explanation.optimizer_version,
        method=explanation.method, drivers=list(explanation.optimizer_drivers or explanation.drivers),
        trades=[
            TradeAttribution(
                symbol=t.symbol, trade_shares=dec(t.trade_shares, SHARE_PLACES),
                base_shares=dec(t.base_shares, SHARE_PLACES),
                contributions_shares={d: dec(v, SHARE_PLACES) for d, v in t.contributions_shares.items()},
            )
            for t in (explanation.optimizer_trades or explanation.trades)
        ],
        resolves=explanation.resolves, narrative_advisor=explanation.narrative_advisor,
        narrative_client=explanation.narrative_client,
    )


def warm_up_explainer() -> None:
    """Import shap and JIT its exact explainer once (seconds), e.g. when a service starts."""
    import shap

    masker = shap.maskers.Independent(np.zeros((1, 2)), max_samples=1)
    shap.explainers.Exact(lambda x: np.asarray(x, dtype=float), masker)(np.ones((1, 2)), silent=True)

