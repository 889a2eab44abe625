"""The proposal lifecycle (pure): readiness in either order, exactly once; who may decide when."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from trimtab.optimizer.domain import lifecycle as lc
from trimtab.optimizer.domain.lifecycle import Decision, Lifecycle, State, TransitionError
from trimtab.optimizer.domain.orders import (
    UnfilledReportInvalid,
    accept_unfilled,
    client_order_id,
    execution_outcome,
    fully_filled,
    with_client_order_ids,
)
from trimtab.shared.events import Fill, Order, UnfilledOrder

ADVISOR_APPROVES = Decision("approved", "advisor@t1", automatic=False)


@pytest.mark.parametrize("first,second,middle", [
    ("risk", "explanation", State.ASSESSED),
    ("explanation", "risk", State.EXPLAINED),
])
def test_ready_once_both_parts_arrive_in_either_order(first, second, middle):
    a = lc.attach(Lifecycle(State.PROPOSED), first)
    assert a.lifecycle.state == middle and not a.became_ready and not a.duplicate
    b = lc.attach(a.lifecycle, second)
    assert b.lifecycle.state == State.READY and b.became_ready
    assert b.lifecycle.has_risk and b.lifecycle.has_explanation


@pytest.mark.parametrize("part", ["risk", "explanation"])
def test_a_part_arriving_twice_changes_nothing_and_never_readies_twice(part):
    once = lc.attach(Lifecycle(State.PROPOSED), part)
    twice = lc.attach(once.lifecycle, part)
    assert twice.duplicate and twice.lifecycle == once.lifecycle and not twice.became_ready
    ready = lc.attach(once.lifecycle, "risk" if part == "explanation" else "explanation").lifecycle
    again = lc.attach(ready, part)
    assert again.duplicate and not again.became_ready and again.lifecycle.state == State.READY


@pytest.mark.parametrize("state", [State.APPROVED, State.REJECTED, State.FAILED, State.EXPIRED,
                                   State.EXECUTED])
def test_late_parts_are_kept_but_do_not_reopen_a_closed_proposal(state):
    a = lc.attach(Lifecycle(state), "risk")
    assert a.lifecycle.state == state and a.lifecycle.has_risk and not a.became_ready


def test_automatic_policy_approves_a_clean_ready_proposal():
    ready = Lifecycle(State.READY, True, True)
    d = lc.automatic_decision(ready, order_count=3, automation="automatic", risk_flags=[])
    assert d == Decision("approved", lc.AUTOMATIC_APPROVER, automatic=True)
    assert lc.decide(ready, d).state == State.APPROVED


@pytest.mark.parametrize("automation,flags", [
    ("advisor_approval", []), ("propose_only", []), ("automatic", ["concentration"]),
])
def test_an_advisor_decides_unless_policy_is_automatic_and_risk_is_clean(automation, flags):
    ready = Lifecycle(State.READY, True, True)
    assert lc.automatic_decision(ready, order_count=2, automation=automation, risk_flags=flags) is None


def test_automatic_policy_waits_for_readiness():
    for state in (State.PROPOSED, State.ASSESSED, State.EXPLAINED):
        assert lc.automatic_decision(Lifecycle(state), order_count=2, automation="automatic",
                                     risk_flags=[]) is None


def test_no_trades_is_rejected_automatically_at_once():
    d = lc.automatic_decision(Lifecycle(State.PROPOSED), order_count=0, automation="advisor_approval",
                              risk_flags=[])
    assert d is not None and d.kind == "rejected" and d.automatic and d.reason == lc.NO_TRADES_REASON
    assert lc.decide(Lifecycle(State.PROPOSED), d).state == State.REJECTED
    # ...and a decided proposal is never decided again.
    assert lc.automatic_decision(Lifecycle(State.REJECTED), order_count=0, automation="automatic",
                                 risk_flags=[]) is None


@pytest.mark.parametrize("state", sorted(set(State) - {State.READY}))
def test_people_decide_only_ready_proposals(state):
    with pytest.raises(TransitionError) as e:
        lc.decide(Lifecycle(state), ADVISOR_APPROVES)
    assert e.value.state == state and "approve" in str(e.value)


def test_a_human_rejection_needs_a_reason():
    ready = Lifecycle(State.READY, True, True)
    with pytest.raises(ValueError):
        lc.decide(ready, Decision("rejected", "advisor@t1", automatic=False, reason="  "))
    assert lc.decide(ready, Decision("rejected", "a", automatic=False, reason="client call")).state \
        == State.REJECTED


@pytest.mark.parametrize("state,expires", [(s, s in lc.OPEN) for s in State])
def test_only_open_proposals_expire(state, expires):
    d = Decision("expired", "optimizer:ttl", automatic=True, reason="ttl")
    if expires:
        assert lc.decide(Lifecycle(state), d).state == State.EXPIRED
    else:
        with pytest.raises(TransitionError):
            lc.decide(Lifecycle(state), d)


@pytest.mark.parametrize("state", list(State))
def test_only_approved_or_overridden_proposals_execute(state):
    # An override is an approval of edited orders: its fills complete it too.
    if state in (State.APPROVED, State.OVERRIDDEN):
        assert Lifecycle(state).is_executable and lc.execute(Lifecycle(state)).state == State.EXECUTED
    else:
        assert not Lifecycle(state).is_executable
        with pytest.raises(TransitionError):
            lc.execute(Lifecycle(state))


@pytest.mark.parametrize("state,after", [
    (State.APPROVED, State.EXECUTED), (State.OVERRIDDEN, State.EXECUTED),
    (State.READY, None), (State.REJECTED, None), (State.EXPIRED, None),
])
async def test_full_fills_execute_an_approved_or_overridden_proposal(monkeypatch, state, after):
    """`proposals.record_fills` moves a fully filled proposal to executed by the lifecycle's rule
    (an overridden one included); other states keep theirs. The row update is captured."""
    from types import SimpleNamespace

    from trimtab.optimizer import proposals

    updates: list[dict] = []

    async def capture(uow, row, **values):  # type: ignore[no-untyped-def]
        updates.append(values)
        return row

    monkeypatch.setattr(proposals, "_update", capture)
    orders = with_client_order_ids(uuid.uuid4(), [_order("VTI", "sell", "3")])
    row = SimpleNamespace(state=state.value, risk={}, explanation={}, fills=[], unfilled=[],
                          orders=[o.model_dump(mode="json") for o in orders])
    fill = Fill(client_order_id=orders[0].client_order_id or "", symbol="VTI", side="sell",
                shares=Decimal("3"), price_usd=Decimal("10"), executed_at="2024-05-02T15:00:00Z")
    await proposals.record_fills(None, row, "ex-1", [fill])  # type: ignore[arg-type]
    [values] = updates
    assert len(values["fills"]) == 1 and values.get("state") == (after.value if after else None)


def _order(symbol: str, side: str, shares: str) -> Order:
    return Order(symbol=symbol, side=side, shares=Decimal(shares), est_price_usd=Decimal("10"),  # type: ignore[arg-type]
                 est_notional_usd=Decimal(shares) * 10)


def test_client_order_ids_are_deterministic_and_distinct():
    p1, p2 = uuid.uuid4(), uuid.uuid4()
    assert client_order_id(p1, "VTI", "buy") == client_order_id(p1, "VTI", "buy")
    ids = {client_order_id(p, s, side) for p in (p1, p2) for s in ("VTI", "BND") for side in ("buy", "sell")}
    assert len(ids) == 8
    assert uuid.UUID(client_order_id(p1, "VTI", "buy")).version == 5
    orders = with_client_order_ids(p1, [_order("VTI", "sell", "3"), _order("BND", "buy", "5")])
    assert [o.client_order_id for o in orders] == [client_order_id(p1, "VTI", "sell"),
                                                    client_order_id(p1, "BND", "buy")]


def test_fully_filled_sums_partial_fills_per_order():
    orders = with_client_order_ids(uuid.uuid4(), [_order("VTI", "sell", "3"), _order("BND", "buy", "5")])
    vti, bnd = (o.client_order_id for o in orders)

    def fill(cid, sym, side, shares):  # type: ignore[no-untyped-def]
        return Fill(client_order_id=cid, symbol=sym, side=side, shares=Decimal(shares),
                    price_usd=Decimal("10"), executed_at="2024-05-02T15:00:00Z")

    part = [fill(vti, "VTI", "sell", "3"), fill(bnd, "BND", "buy", "2")]
    assert not fully_filled(orders, part)
    assert not fully_filled(orders, part + [fill("someone-else", "BND", "buy", "9")])
    assert fully_filled(orders, part + [fill(bnd, "BND", "buy", "3")])
    assert not fully_filled([], part)


def _unfilled(cid, sym, side, shares, status="rejected"):  # type: ignore[no-untyped-def]
    return UnfilledOrder(client_order_id=cid, symbol=sym, side=side, unfilled_shares=Decimal(shares),
                         status=status, reason="broker refused")


def test_fills_and_unfilled_reports_end_an_approval_executed_or_unfilled():
    orders = with_client_order_ids(uuid.uuid4(), [_order("VTI", "sell", "3"), _order("BND", "buy", "5")])
    vti, bnd = (o.client_order_id for o in orders)

    def fill(cid, sym, side, shares):  # type: ignore[no-untyped-def]
        return Fill(client_order_id=cid, symbol=sym, side=side, shares=Decimal(shares),
                    price_usd=Decimal("10"), executed_at="2024-05-02T15:00:00Z")

    sold = [fill(vti, "VTI", "sell", "3")]
    assert execution_outcome(orders, sold) is None  # the BND buy is still working
    assert execution_outcome(orders, sold, [_unfilled(bnd, "BND", "buy", "4")]) is None  # 1 share left
    assert execution_outcome(orders, sold + [fill(bnd, "BND", "buy", "1")],
                             [_unfilled(bnd, "BND", "buy", "4", "canceled")]) == "unfilled"
    assert execution_outcome(orders, [], [_unfilled(vti, "VTI", "sell", "3"),
                                          _unfilled(bnd, "BND", "buy", "5")]) == "unfilled"
    assert execution_outcome(orders, sold + [fill(bnd, "BND", "buy", "5")]) == "executed"
    assert execution_outcome([], [], [_unfilled(bnd, "BND", "buy", "5")]) is None
    # A report for another approval's order counts for nothing here.
    assert execution_outcome(orders, sold, [_unfilled("other", "BND", "buy", "5")]) is None


def test_an_unfilled_report_must_fit_the_approved_orders_and_overlaps_are_clipped():
    orders = with_client_order_ids(uuid.uuid4(), [_order("VTI", "sell", "3"), _order("BND", "buy", "5")])
    vti, bnd = (o.client_order_id for o in orders)
    assert accept_unfilled(orders, [], [_unfilled(bnd, "BND", "buy", "5")]) == [_unfilled(bnd, "BND", "buy", "5")]
    with pytest.raises(UnfilledReportInvalid, match="not an order of this approval"):
        accept_unfilled(orders, [], [_unfilled("nope", "BND", "buy", "1")])
    with pytest.raises(UnfilledReportInvalid, match="is a sell of VTI"):
        accept_unfilled(orders, [], [_unfilled(vti, "VTI", "buy", "1")])
    with pytest.raises(UnfilledReportInvalid, match="cannot leave 6 shares unfilled"):
        accept_unfilled(orders, [], [_unfilled(bnd, "BND", "buy", "6")])
    # An OMS's final report after a supervisor ended the rest (or a corrected report): what the
    # earlier reports ended counts once; only what they left is taken, the rest dropped.
    earlier = [_unfilled(bnd, "BND", "buy", "3", "canceled")]
    got = accept_unfilled(orders, earlier, [_unfilled(bnd, "BND", "buy", "5", "expired"),
                                            _unfilled(vti, "VTI", "sell", "3", "expired")])
    assert [(u.client_order_id, u.unfilled_shares, u.status) for u in got] == [
        (bnd, Decimal(2), "expired"), (vti, Decimal(3), "expired")]
    assert accept_unfilled(orders, earlier + [_unfilled(bnd, "BND", "buy", "2")], [_unfilled(bnd, "BND", "buy", "5")]) == []
    # Shares already filled are not unfilled either.
    filled = [Fill(client_order_id=bnd, symbol="BND", side="buy", shares=Decimal(4), price_usd=Decimal("10"),
                   executed_at="2024-05-02T15:00:00Z")]
    assert [u.unfilled_shares for u in accept_unfilled(orders, [], [_unfilled(bnd, "BND", "buy", "5")], filled)] == [1]


@pytest.mark.parametrize("state", [State.APPROVED, State.OVERRIDDEN])
def test_an_approval_ends_unfilled(state):
    assert lc.execute(Lifecycle(state), "unfilled").state == State.UNFILLED
    assert lc.execute(Lifecycle(state)).state == State.EXECUTED
    with pytest.raises(TransitionError):
        lc.execute(Lifecycle(State.READY), "unfilled")
