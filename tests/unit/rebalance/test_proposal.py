"""propose(): whole-share orders that pass every constraint, reported exactly and reproducibly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trimtab.rebalance import OPTIMIZER_VERSION, from_snapshot, propose
from trimtab.rebalance import problem as problem_module
from trimtab.rebalance.problem import IPM_SOLVER
from trimtab.shared.canonical import canonical_hash
from trimtab.shared.events import AccountSnapshot, RebalanceProposed

from .conftest import drifted_account, make_snapshot


def lot_arithmetic_tax(snapshot: AccountSnapshot, orders: list) -> Decimal:
    """Realized gain times rate, lot by lot, in Decimals straight from the snapshot."""
    lots = {lot.lot_id: lot for pos in snapshot.positions for lot in pos.lots}
    price = {s.symbol: s.price_usd for s in snapshot.securities}
    trade_date = snapshot.as_of.date()
    total = Decimal(0)
    for o in orders:
        for li in o.lots:
            lot = lots[li.lot_id]
            acquired = lot.acquired_on
            # Held more than a year: sold after the anniversary (tuple order handles 29 February).
            long_term = (trade_date.year, trade_date.month, trade_date.day) > (
                acquired.year + 1, acquired.month, acquired.day)
            rate = snapshot.tax_rates.long_term if long_term else snapshot.tax_rates.short_term
            if snapshot.account_type != "taxable":
                rate = Decimal(0)
            total += li.shares * (price[o.symbol] - lot.cost_basis_usd_per_share) * rate
    return total


def cash_after_orders(snapshot: AccountSnapshot, orders: list) -> Decimal:
    cash = snapshot.cash_usd
    for o in orders:
        cash += (o.est_notional_usd if o.side == "sell" else -o.est_notional_usd) - o.est_cost_usd
    return cash


def assert_valid(snapshot: AccountSnapshot, proposal) -> None:  # type: ignore[no-untyped-def]
    held = {lot.lot_id: lot.shares for pos in snapshot.positions for lot in pos.lots}
    seen = set()
    for o in proposal.orders:
        assert o.symbol not in seen, "one order per security"
        seen.add(o.symbol)
        assert o.symbol not in snapshot.restricted
        assert o.shares > 0
        if o.side == "sell":
            assert o.lots and sum(li.shares for li in o.lots) == o.shares
            for li in o.lots:
                assert li.shares <= held[li.lot_id]
                assert li.shares == li.shares.to_integral_value() or li.shares == held[li.lot_id]
        else:
            assert not o.lots and o.shares == o.shares.to_integral_value()
        assert o.est_notional_usd == (o.shares * o.est_price_usd).quantize(Decimal("0.01"))
    assert cash_after_orders(snapshot, proposal.orders) >= snapshot.cash_reserve_usd - Decimal("0.02")


@pytest.mark.parametrize("kwargs", [
    {"n": 6, "gains": False},
    {"n": 6, "gains": True, "reserve": 5_000},
    {"n": 20, "gains": True, "restricted": ["S03", "S11"]},
    {"n": 12, "gains": True, "account_type": "tax_deferred", "cash_weight": 0.0, "reserve": 8_000},
])
def test_orders_pass_every_constraint(kwargs: dict) -> None:
    n = kwargs.pop("n")
    snap = drifted_account(n, **kwargs)
    p = propose(snap)
    assert p.orders
    assert_valid(snap, p)
    assert p.snapshot_hash == canonical_hash(snap)
    # The structured solver answers single-account problems (Clarabel what it does not certify).
    assert p.solver.solver == IPM_SOLVER and p.solver.status == "optimal"
    assert p.solver.optimizer_version == OPTIMIZER_VERSION


def test_tax_estimate_is_the_lot_arithmetic() -> None:
    snap = drifted_account(20, gains=True)
    p = propose(snap)
    assert any(o.side == "sell" for o in p.orders)
    assert p.est_tax_usd == lot_arithmetic_tax(snap, list(p.orders)).quantize(Decimal("0.01"))
    assert p.est_tax_usd < 0  # this account harvests losses


def test_cost_estimate_is_half_spread_plus_commission() -> None:
    snap = drifted_account(6, gains=False, commission=0.01)
    p = propose(snap)
    spread = {s.symbol: s.half_spread_bps / Decimal(10_000) for s in snap.securities}
    for o in p.orders:
        assert o.est_cost_usd == (o.shares * o.est_price_usd * spread[o.symbol]
                                  + o.shares * Decimal("0.01")).quantize(Decimal("0.01"))
    assert p.est_cost_usd == sum(o.est_cost_usd for o in p.orders)


def test_same_snapshot_same_orders_even_after_recompiling() -> None:
    snap = drifted_account(20, gains=True, reserve=2_500, restricted=["S05"])
    first = propose(snap)
    second = propose(snap)
    problem_module._CACHE.clear()
    third = propose(AccountSnapshot.model_validate_json(snap.model_dump_json()))
    assert first.orders == second.orders == third.orders
    assert first.proposal_id == third.proposal_id
    strip = {"solver": {"solve_ms"}}
    assert first.to_event().model_dump(exclude=strip) == third.to_event().model_dump(exclude=strip)


def test_event_round_trips_through_json() -> None:
    p = propose(drifted_account(6, gains=True))
    event = p.to_event()
    assert RebalanceProposed.model_validate_json(event.model_dump_json()) == event
    assert set(p.objective) >= {"drift", "cost", "tax", "cash", "total", "total_continuous"}
    assert set(p.pre_weights) == set(p.post_weights) == set(from_snapshot(p.snapshot).symbols)
    for o in p.orders:
        assert o.est_notional_usd == o.est_notional_usd.quantize(Decimal("0.01"))


def test_sells_the_highest_basis_lot_when_taxes_do_not_decide() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 100},
                         holdings={"A": [(100, 60, 900), (100, 95, 800), (100, 70, 700)], "B": 100},
                         targets={"A": 0.5, "B": 0.5}, account_type="tax_deferred")
    p = propose(snap)
    [sell] = [o for o in p.orders if o.side == "sell"]
    assert 99 <= sell.shares <= 100  # costs and the regularizer stop a hair short of target
    assert [li.lot_id for li in sell.lots] == ["A-2"]


def test_a_fractional_lot_is_sold_whole() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 50}, holdings={"A": [(10.5, 90, 900)], "B": 10},
                         targets={"B": 1.0}, account_type="tax_deferred")
    p = propose(snap)
    [sell] = [o for o in p.orders if o.symbol == "A"]
    assert sell.shares == Decimal("10.5") and sell.lots[0].shares == Decimal("10.5")


def test_small_orders_are_dropped_and_the_rest_re_solved() -> None:
    # C is a few dollars under target: its buy is under the $50 minimum.
    snap = make_snapshot(prices={"A": 100, "B": 100, "C": 10},
                         holdings={"A": 700, "B": 200, "C": 470}, targets={"A": 0.5, "B": 0.45, "C": 0.05},
                         cash=20, account_type="tax_deferred")
    p = propose(snap)
    assert "C" not in {o.symbol for o in p.orders}
    assert p.dropped == ("C",)
    assert {o.symbol for o in p.orders} == {"A", "B"}
    assert_valid(snap, p)


def test_a_reserve_raised_by_a_fractional_sale_is_rounded_up_not_missed() -> None:
    # 10.3 shares raise the reserve exactly; 10 would leave it short, so 11 are sold.
    snap = make_snapshot(prices={"A": 97}, holdings={"A": 200}, targets={"A": 1.0}, cash=0, reserve=1000,
                         account_type="tax_deferred")
    p = propose(snap)
    [sell] = p.orders
    assert sell.shares == 11
    assert cash_after_orders(snap, list(p.orders)) >= Decimal(1000)


def test_constraint_drivers_cannot_be_switched_off_in_a_proposal() -> None:
    with pytest.raises(ValueError, match="constraint drivers"):
        propose(drifted_account(4), drivers={"restrictions": 0.0})
    with pytest.raises(ValueError, match="unknown drivers"):
        propose(drifted_account(4), drivers={"momentum": 1.0})


def test_nothing_to_do_gives_no_orders() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 100}, holdings={"A": 50, "B": 50},
                         targets={"A": 0.5, "B": 0.5})
    p = propose(snap)
    assert p.orders == () and p.est_cost_usd == 0 and p.est_tax_usd == 0


def test_event_carries_tax_and_cost_breakdowns_drift_and_notes() -> None:
    snap = drifted_account(10, gains=True, seed=4, reserve=2_000)
    p = propose(snap)
    e = RebalanceProposed.model_validate_json(p.to_event().model_dump_json())
    assert e.tax_breakdown is not None and e.cost_breakdown is not None
    assert e.tax_breakdown["tax_total_usd"] == e.est_tax_usd
    assert e.tax_breakdown["short_term_tax_usd"] + e.tax_breakdown["long_term_tax_usd"] \
        == pytest.approx(e.est_tax_usd, abs=Decimal("0.01"))
    # Both are sums of cent-rounded amounts (per kind, per order): they agree to rounding.
    assert abs(e.cost_breakdown["total_usd"] - e.est_cost_usd) <= Decimal("0.03")
    targets = snap.targets
    for s, w in e.post_weights.items():
        assert e.post_drift[s] == w - targets.get(s, Decimal(0))
        assert e.pre_drift[s] == e.pre_weights[s] - targets.get(s, Decimal(0))
    assert e.notes == list(p.notes)
    # The band: every deviation beyond it before is at most the band after (the optimizer's promise).
    band = snap.policy.band_abs
    assert all(abs(d) <= band + Decimal("0.001") for d in e.post_drift.values())
