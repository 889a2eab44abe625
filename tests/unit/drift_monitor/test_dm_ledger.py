"""The fill ledger: lots and cash after fills equal an independent reference, share by share."""

from __future__ import annotations

from datetime import UTC, date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.drift_monitor.domain.ledger import (
    FillLine,
    LedgerError,
    LedgerLimits,
    Lot,
    apply_fills,
)
from trimtab.drift_monitor.domain.policy import ARMED, EXECUTING, PENDING, after_decision, may_fire

D = Decimal


def lot(i: str, sym: str, sh: str, basis: str, day: int = 1) -> Lot:
    return Lot(i, sym, D(sh), D(basis), date(2020, 1, day))


def test_named_lots_then_hifo_and_cash() -> None:
    lots = [lot("a", "AAA", "10", "5"), lot("b", "AAA", "10", "9"), lot("c", "AAA", "10", "7"),
            lot("z", "ZZZ", "1", "1")]
    fills = [
        FillLine("o1", "AAA", "sell", D("12"), D("10.005"), date(2024, 1, 2), (("a", D("4")),)),
        FillLine("o2", "BBB", "buy", D("3.5"), D("20"), date(2024, 1, 2)),
    ]
    new, cash = apply_fills(lots, D("100"), fills)
    # 4 from the named lot a, the other 8 from b (basis 9, the highest)
    assert {x.lot_id: x.shares for x in new} == {"a": D(6), "b": D(2), "c": D(10), "z": D(1), "o2": D("3.5")}
    bought = next(x for x in new if x.lot_id == "o2")
    assert bought.acquired_on == date(2024, 1, 2) and bought.cost_basis_usd_per_share == D(20)
    # 12 * 10.005 = 120.06 in; 3.5 * 20 = 70 out
    assert cash == D("150.06")


def test_partial_fill_of_named_lots_stops_early_and_lot_ids_stay_unique() -> None:
    lots = [lot("a", "AAA", "10", "5"), lot("b", "AAA", "10", "9")]
    fills = [FillLine("o1", "AAA", "sell", D("5"), D("1"), date(2024, 1, 2), (("a", D("4")), ("b", D("6")))),
             FillLine("o2", "AAA", "buy", D("1"), D("1"), date(2024, 1, 2)),
             FillLine("o2", "AAA", "buy", D("1"), D("1"), date(2024, 1, 3))]
    new, _ = apply_fills(lots, D(0), fills)
    assert {x.lot_id: x.shares for x in new} == {"a": D(6), "b": D(9), "o2": D(1), "o2#2": D(1)}


def test_overselling_is_an_error() -> None:
    with pytest.raises(LedgerError):
        apply_fills([lot("a", "AAA", "1", "1")], D(0), [FillLine("o", "AAA", "sell", D(2), D(1), date(2024, 1, 1))])


def reference_ledger(lots, cash, fills):  # type: ignore[no-untyped-def]
    """Independent: shares per lot in a plain dict; every sell HIFO; cents per fill."""
    held = {x.lot_id: [x.symbol, x.shares, x.cost_basis_usd_per_share, x.acquired_on] for x in lots}
    for f in fills:
        notional = (f.shares * f.price_usd).quantize(D("0.01"))
        if f.side == "buy":
            k, lid = 1, f.client_order_id
            while lid in held:
                k += 1
                lid = f"{f.client_order_id}#{k}"
            held[lid] = [f.symbol, f.shares, f.price_usd, f.trade_date]
            cash -= notional
        else:
            need = f.shares
            order = sorted((v[2] * -1, v[3], k) for k, v in held.items() if v[0] == f.symbol)
            for _, _, k in order:
                take = min(need, held[k][1])
                held[k][1] -= take
                need -= take
            if need > 0:
                return None
            cash += notional
        held = {k: v for k, v in held.items() if v[1] > 0}
    return {k: v[1] for k, v in held.items()}, cash


shares_st = st.decimals(min_value=D("0.0001"), max_value=500, places=4, allow_nan=False)
price_st = st.decimals(min_value=D("0.01"), max_value=1000, places=3, allow_nan=False)


@st.composite
def ledger_case(draw):  # type: ignore[no-untyped-def]
    syms = ["AAA", "BBB", "CCC"]
    lots = [Lot(f"L{i}", draw(st.sampled_from(syms)), draw(shares_st), draw(price_st),
                date(2020, 1, draw(st.integers(1, 28)))) for i in range(draw(st.integers(0, 8)))]
    fills = [FillLine(f"O{draw(st.integers(0, 3))}", draw(st.sampled_from(syms)),
                      draw(st.sampled_from(["buy", "sell"])), draw(shares_st), draw(price_st),
                      date(2024, 1, 2)) for _ in range(draw(st.integers(0, 6)))]
    cash = draw(st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False))
    return lots, cash, fills


@settings(max_examples=300, deadline=None)
@given(ledger_case())
def test_ledger_equals_reference(case):  # type: ignore[no-untyped-def]
    lots, cash, fills = case
    ref = reference_ledger(lots, cash, fills)
    if ref is None:
        with pytest.raises(LedgerError):
            apply_fills(lots, cash, fills)
        return
    new, new_cash = apply_fills(lots, cash, fills)
    assert {x.lot_id: x.shares for x in new} == ref[0]
    assert new_cash == ref[1]
    # shares are conserved per symbol
    for sym in {x.symbol for x in lots} | {f.symbol for f in fills}:
        before = sum((x.shares for x in lots if x.symbol == sym), D(0))
        delta = sum((f.shares if f.side == "buy" else -f.shares for f in fills if f.symbol == sym), D(0))
        assert sum((x.shares for x in new if x.symbol == sym), D(0)) == before + delta


def test_hysteresis_policy() -> None:
    from datetime import datetime, timedelta

    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert may_fire(ARMED, None, now, 300)
    assert not may_fire(PENDING, None, now, 0)
    assert not may_fire(ARMED, now - timedelta(seconds=299), now, 300)
    assert may_fire(ARMED, now - timedelta(seconds=300), now, 300)
    assert after_decision(PENDING, "rejected").state == ARMED and after_decision(PENDING, "expired").rearmed
    assert after_decision(PENDING, "approved").state == EXECUTING
    assert after_decision(PENDING, "overridden").state == EXECUTING
    # a late refusal of an older proposal does not release executing trades
    assert after_decision(EXECUTING, "rejected").state == EXECUTING


LIMITS = LedgerLimits(max_price_usd=D("1000"), max_shares=D("100"), max_abs_cash_usd=D("5000"))


@pytest.mark.parametrize(("fill", "says"), [
    (FillLine("o1", "AAA", "buy", D("1"), D("1000.01"), date(2024, 1, 2)), "price 1000.01 USD a share"),
    (FillLine("o1", "AAA", "buy", D("91"), D("1"), date(2024, 1, 2)), "101.00000000 shares"),
    (FillLine("o1", "AAA", "buy", D("6.5"), D("999"), date(2024, 1, 2)), "-5493.50 USD of cash"),
    (FillLine("o1", "AAA", "sell", D("5"), D("900"), date(2024, 1, 2)), "5500.00 USD of cash"),
])
def test_fills_past_the_limits_are_refused_whole(fill: FillLine, says: str) -> None:
    lots = [lot("a", "AAA", "10", "5")]
    with pytest.raises(LedgerError, match=says.replace(".", r"\.")):
        apply_fills(lots, D("1000"), [fill], LIMITS)
    # The same fill without limits goes through: the bound, not the arithmetic, refused it.
    apply_fills(lots, D("1000"), [fill])


def test_fills_within_the_limits_apply() -> None:
    lots = [lot("a", "AAA", "10", "5")]
    new, cash = apply_fills(lots, D("1000"), [FillLine("o1", "AAA", "buy", D("90"), D("10"), date(2024, 1, 2))],
                            LIMITS)
    assert sum(x.shares for x in new) == D(100) and cash == D(100)
