"""Price-move expiry, the pure part: the move in Decimal, which orders trip the limit, the
expiry decision and its reason, late ticks, and the setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from trimtab.optimizer.app import Settings
from trimtab.optimizer.domain import lifecycle as lc
from trimtab.optimizer.domain.lifecycle import Lifecycle, State, TransitionError
from trimtab.optimizer.models import OPEN_STATES
from trimtab.optimizer.prices import (
    DECIDED_BY,
    PriceMove,
    Quote,
    expiry_decision,
    expiry_reason,
    moves_beyond,
    newest_per_symbol,
)
from trimtab.shared.events import PriceTicked

D = Decimal
SNAP = datetime(2024, 5, 1, 21, 0, tzinfo=UTC)
LATER = SNAP + timedelta(minutes=5)
LIMIT = D("0.02")


def orders(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    """Orders as stored (JSON): symbol and estimated price."""
    return [{"symbol": s, "side": "buy", "shares": "10", "est_price_usd": p, "est_notional_usd": "0"}
            for s, p in pairs]


def test_the_move_is_exact_in_decimal_and_the_reason_names_symbol_prices_move_and_limit():
    m = PriceMove("VTI", D("250"), D("257.80"))
    assert m.move == D("0.0312")  # exact: no binary float anywhere
    assert m.beyond(LIMIT)
    assert m.describe(LIMIT) == "VTI moved +3.12 % since the snapshot ($250.00 -> $257.80; limit 2.00 %)"
    down = PriceMove("BND", D("72"), D("70.20"))
    assert down.move == D("-0.025") and down.beyond(LIMIT)
    assert down.describe(D("0.015")) == "BND moved -2.50 % since the snapshot ($72.00 -> $70.20; limit 1.50 %)"
    assert down.as_json() == {"symbol": "BND", "est_price_usd": "72", "price_usd": "70.20", "move_pct": "-2.50"}


def test_the_limit_itself_is_within_and_zero_disables():
    exactly = PriceMove("VTI", D("250"), D("255"))  # +2.00 % exactly
    assert exactly.move == LIMIT and not exactly.beyond(LIMIT)
    assert PriceMove("VTI", D("250"), D("255.01")).beyond(LIMIT)
    assert PriceMove("VTI", D("250"), D("244.99")).beyond(LIMIT)
    huge = PriceMove("VTI", D("250"), D("500"))
    assert not huge.beyond(D("0"))
    assert moves_beyond(orders(("VTI", "250")), {"VTI": Quote(D("500"), LATER)}, SNAP, D("0")) == []


def test_prices_quoted_finer_than_cents_keep_their_digits_and_large_ones_get_separators():
    m = PriceMove("PNY", D("0.1234"), D("0.1300"))
    assert "($0.1234 -> $0.13;" in m.describe(LIMIT)
    assert "($1,250.00 -> $1,300.00;" in PriceMove("BRK", D("1250"), D("1300")).describe(LIMIT)


def test_only_symbols_beyond_the_limit_largest_move_first_each_symbol_once():
    os_ = orders(("VTI", "250"), ("BND", "72"), ("VXUS", "60"), ("VTI", "250"), ("VNQ", "85"))
    quotes = {"VTI": Quote(D("257.80"), LATER),   # +3.12 %
              "BND": Quote(D("72.50"), LATER),    # +0.69 %: within
              "VXUS": Quote(D("56.40"), LATER)}   # -6.00 %
    # VNQ has no known price: nothing to say about it.
    moves = moves_beyond(os_, quotes, SNAP, LIMIT)
    assert [(m.symbol, m.move) for m in moves] == [("VXUS", D("-0.06")), ("VTI", D("0.0312"))]
    assert expiry_reason(moves, LIMIT) == (
        "VXUS moved -6.00 % since the snapshot ($60.00 -> $56.40; limit 2.00 %); "
        "VTI moved +3.12 % since the snapshot ($250.00 -> $257.80; limit 2.00 %)")


def test_a_price_not_newer_than_the_snapshot_expires_nothing():
    os_ = orders(("VTI", "250"))
    for as_of in (SNAP - timedelta(seconds=1), SNAP):  # late tick; the snapshot's own moment
        assert moves_beyond(os_, {"VTI": Quote(D("300"), as_of)}, SNAP, LIMIT) == []
    assert len(moves_beyond(os_, {"VTI": Quote(D("300"), SNAP + timedelta(microseconds=1))}, SNAP, LIMIT)) == 1


def test_each_symbol_is_compared_with_the_time_of_its_own_snapshot_price():
    """The snapshot's `as_of` is the triggering tick's time; each symbol's price has its own
    (`SecuritySnapshot.price_as_of`). VTI was priced at $103 five seconds after `as_of`: a $100
    quote from two seconds after `as_of` is older than that price and expires nothing (it did
    before). AGG was priced at $100 a minute before `as_of`: a $97 quote from thirty seconds
    before `as_of` is newer than that price and expires the proposal (it was ignored before)."""
    os_ = orders(("VTI", "103"), ("AGG", "100"))
    priced = {"VTI": SNAP + timedelta(seconds=5), "AGG": SNAP - timedelta(minutes=1)}
    late_vti = {"VTI": Quote(D("100"), SNAP + timedelta(seconds=2))}
    assert moves_beyond(os_, late_vti, SNAP, LIMIT, priced) == []
    assert len(moves_beyond(os_, late_vti, SNAP, LIMIT)) == 1  # by `as_of` alone: a false expiry
    moved_agg = {"AGG": Quote(D("97"), SNAP - timedelta(seconds=30))}
    [m] = moves_beyond(os_, moved_agg, SNAP, LIMIT, priced)
    assert m.symbol == "AGG"
    assert moves_beyond(os_, moved_agg, SNAP, LIMIT) == []  # by `as_of` alone: missed


def test_the_decision_is_an_automatic_expiry_any_open_proposal_can_take():
    moves = moves_beyond(orders(("VTI", "250")), {"VTI": Quote(D("257.80"), LATER)}, SNAP, LIMIT)
    d = expiry_decision(moves, LIMIT)
    assert d is not None
    assert (d.kind, d.decided_by, d.automatic) == ("expired", DECIDED_BY, True)
    assert d.reason == "VTI moved +3.12 % since the snapshot ($250.00 -> $257.80; limit 2.00 %)"
    assert expiry_decision([], LIMIT) is None
    for state in lc.OPEN:
        assert lc.decide(Lifecycle(state), d).state == State.EXPIRED
    for state in (State.APPROVED, State.REJECTED, State.EXPIRED, State.EXECUTED, State.FAILED):
        with pytest.raises(TransitionError):
            lc.decide(Lifecycle(state), d)


def test_a_batch_keeps_the_newest_tick_per_tenant_and_symbol():
    def tick(sym: str, px: str, at: datetime) -> PriceTicked:
        return PriceTicked(symbol=sym, price_usd=D(px), as_of=at)

    newest = newest_per_symbol([
        ("t1", tick("VTI", "251", LATER)),
        ("t1", tick("VTI", "250", SNAP)),                     # older, arrives later: ignored
        ("t1", tick("BND", "72", LATER)),
        ("t1", tick("BND", "73", LATER)),                     # same time: the later one wins
        ("t2", tick("VTI", "999", SNAP)),                     # another tenant's price
        ("t1", tick("VNQ", "85", datetime(2024, 5, 2, 9))),   # no zone: UTC
    ])
    assert newest == {("t1", "VTI"): Quote(D("251"), LATER), ("t1", "BND"): Quote(D("73"), LATER),
                      ("t2", "VTI"): Quote(D("999"), SNAP),
                      ("t1", "VNQ"): Quote(D("85"), datetime(2024, 5, 2, 9, tzinfo=UTC))}


def test_open_states_of_the_index_are_the_lifecycle_s():
    assert set(OPEN_STATES) == {s.value for s in lc.OPEN}


def test_the_setting_is_a_decimal_fraction_defaulting_to_two_percent():
    assert Settings().proposal_max_price_move == D("0.02")
    s = Settings.model_validate({"PROPOSAL_MAX_PRICE_MOVE": "0.035"})
    assert s.proposal_max_price_move == D("0.035") and isinstance(s.proposal_max_price_move, Decimal)
    assert Settings.model_validate({"PROPOSAL_MAX_PRICE_MOVE": "0"}).proposal_max_price_move == 0
    with pytest.raises(ValidationError):
        Settings.model_validate({"PROPOSAL_MAX_PRICE_MOVE": "-0.01"})
