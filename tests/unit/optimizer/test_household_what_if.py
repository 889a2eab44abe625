"""The household what-if's worker (`engine._solve_household`), no I/O: the asset-location
scenario's exact orders in the API's shape, the context recorded exactly, typed failures."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from tests.integration.optimizer.household_snapshots import SIXTY_FORTY, bond_in_taxable, snap
from trimtab.optimizer.engine import _solve_household
from trimtab.rebalance import RebalanceContext
from trimtab.shared.canonical import canonical_hash
from trimtab.shared.events import HouseholdTrade, OptimizerContext

TAXABLE, IRA = bond_in_taxable("u", "hh-u")
TARGETS = {s: format(w, "f") for s, w in SIXTY_FORTY.items()}


def request(*snapshots, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"household_id": "hh-u", "snapshots": [s.model_dump(mode="json") for s in snapshots],
            "targets": TARGETS, **extra}


def orders(out, account_id: str) -> list[tuple[str, str, Decimal, list[tuple[str, Decimal]]]]:  # type: ignore[no-untyped-def]
    [acct] = [a for a in out.accounts if a.account_id == account_id]
    return [(o.symbol, o.side, o.shares, [(li.lot_id, li.shares) for li in o.lots]) for o in acct.orders]


def test_the_bond_moves_into_the_ira_with_the_exact_orders() -> None:
    outcome = _solve_household(request(TAXABLE, IRA))
    assert outcome.failure is None and outcome.proposal is not None
    p = outcome.proposal
    assert orders(p, "u-taxable") == [("BND", "sell", Decimal(400), [("u-taxable-BND-0", Decimal(400))]),
                                      ("VTI", "buy", Decimal(159), [])]
    assert orders(p, "u-ira") == [("BND", "buy", Decimal(397), []),
                                  ("VTI", "sell", Decimal(159), [("u-ira-VTI-0", Decimal(159))])]
    taxable, ira = p.accounts
    assert (taxable.cash_after_usd, ira.cash_after_usd) == (Decimal("234.05"), Decimal("34.11"))
    assert p.location_drag_before_usd_per_year == Decimal("666.00")
    assert p.location_drag_after_usd_per_year == Decimal("119.25")
    assert taxable.location_drag_after_usd_per_year == Decimal("119.25")
    assert ira.location_drag_before_usd_per_year == ira.location_drag_after_usd_per_year == Decimal("0.00")
    assert p.est_tax_usd == taxable.est_tax_usd == ira.est_tax_usd == Decimal("0.00")
    # 2 bp of half spread on each order: 40,000 + 39,750 in taxable, 39,750 + 39,700 in the IRA
    assert (taxable.est_cost_usd, ira.est_cost_usd, p.est_cost_usd) == (
        Decimal("15.95"), Decimal("15.89"), Decimal("31.84"))
    assert taxable.cost_breakdown_usd["half_spread_usd"] == Decimal("15.95")
    assert p.pre_weights == {"BND": Decimal("0.400000"), "VTI": Decimal("0.600000")}
    assert p.target_weights == {"BND": Decimal("0.400000"), "VTI": Decimal("0.600000")}
    assert abs(p.post_weights["VTI"] - Decimal("0.6")) < Decimal("0.001")
    assert p.driver_weights["location"] == Decimal("1.0") and p.objective["location"] > 0
    assert p.solver.status.startswith("optimal") and p.context is None and p.context_hash is None
    assert p.snapshot_hashes == {"u-taxable": canonical_hash(TAXABLE), "u-ira": canonical_hash(IRA)}
    assert taxable.snapshot_hash == canonical_hash(TAXABLE)
    # money and shares are decimal strings on the wire
    wire = p.model_dump(mode="json")
    assert wire["accounts"][0]["orders"][0]["shares"] == "400"
    assert wire["location_drag_before_usd_per_year"] == "666.00"
    # the same inputs give the same proposal id; the location driver off, nothing trades
    assert _solve_household(request(TAXABLE, IRA)).proposal.proposal_id == p.proposal_id  # type: ignore[union-attr]
    still = _solve_household(request(TAXABLE, IRA, drivers={"location": "0"})).proposal
    assert still is not None and all(not a.orders for a in still.accounts)


def test_the_context_is_recorded_as_the_library_used_it() -> None:
    buy = HouseholdTrade(account_id="u-ira", symbol="VTI", side="buy", trade_date=date(2024, 6, 20))
    ctx = OptimizerContext(recent_trades=[buy])
    p = _solve_household(request(TAXABLE, IRA, context=ctx.model_dump(mode="json"))).proposal
    assert p is not None and p.context is not None and p.context.recent_trades == [buy]
    assert p.context_hash == canonical_hash(RebalanceContext.from_json(ctx.model_dump(mode="json")).to_json())
    empty = _solve_household(request(TAXABLE, IRA, context=OptimizerContext().model_dump(mode="json")))
    assert empty.proposal is not None and empty.proposal.context is None


def test_failures_are_typed_and_name_the_constraint_and_accounts() -> None:
    # the IRA must keep $70,000 in cash but holds $60,000 of VTI and no cash
    short = snap("u-ira", "tax_deferred", {"VTI": [(240, 250.0, 800)]}, household_id="hh-u", reserve="70000")
    f = _solve_household(request(TAXABLE, short)).failure
    assert f is not None and (f.kind, f.constraint, f.account_ids) == ("infeasible", "cash_reserve", ("u-ira",))
    # per-account withdrawals: the taxable account cannot raise $50,000 either
    f = _solve_household(request(TAXABLE, IRA, withdrawals_usd={"u-taxable": "50000"})).failure
    assert f is not None and (f.kind, f.constraint, f.account_ids) == ("infeasible", "withdrawal", ("u-taxable",))

    f = _solve_household(request(TAXABLE, IRA, drivers={"cash": "0"})).failure
    assert f is not None and f.kind == "invalid_drivers" and "constraint drivers" in f.detail
    other = IRA.model_copy(update={"household_id": "hh-other"})
    f = _solve_household(request(TAXABLE, other)).failure
    assert f is not None and f.kind == "invalid_snapshot"
    f = _solve_household(request(TAXABLE, IRA, targets={"VTI": "0.7", "BND": "0.4"})).failure
    assert f is not None and f.kind == "invalid_snapshot" and "more than 1" in f.detail
    f = _solve_household(request(TAXABLE, IRA, context={"factor_model": {"symbols": ["VTI"]}})).failure
    assert f is not None and f.kind == "invalid_context"
