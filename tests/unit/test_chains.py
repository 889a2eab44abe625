"""The chain analysis behind the demo's summary and bench/e2e.py: an expired proposal that the
drift monitor proposed again continues its chain (measured from the first tick, counted once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trimtab_dev.chains import analyse

T0 = datetime(2020, 1, 2, 21, tzinfo=UTC)


def rec(event_id: str, event_type: str, at_s: float, cause: str | None = None, proposal: str | None = None,
        account: str = "A1") -> dict:  # type: ignore[type-arg]
    t = (T0 + timedelta(seconds=at_s)).isoformat()
    return {"event_id": event_id, "event_type": event_type, "causation_id": cause, "proposal_id": proposal,
            "account_id": account, "occurred_at": t, "recorded_at": t}


def test_a_proposal_expired_and_proposed_again_is_one_chain_from_the_first_tick() -> None:
    records = [
        rec("t1", "PriceTicked", 0),
        rec("t2", "PriceTicked", 0.5),
        rec("d1", "DriftDetected", 1, "t1"),
        rec("p1", "RebalanceProposed", 2, "d1", "P1"),
        rec("x1", "RebalanceDecided", 3, "t2", "P1"),  # expired on t2's price move
        rec("d2", "DriftDetected", 4, "x1"),  # checked again at once
        rec("p2", "RebalanceProposed", 5, "d2", "P2"),
        rec("e2", "ExplanationCreated", 6, "p2", "P2"),
        rec("x2", "RebalanceDecided", 7, "e2", "P2"),
        rec("a2", "TradesApproved", 8, "x2", "P2"),
        # another account, decided the first time
        rec("d3", "DriftDetected", 1, "t1", account="B1"),
        rec("p3", "RebalanceProposed", 2, "d3", "P3", account="B1"),
        rec("x3", "RebalanceDecided", 4, "p3", "P3", account="B1"),
    ]
    st = analyse(records)
    assert (st.chains, st.complete_chains, st.superseded) == (2, 2, 1)
    assert sorted(st.latencies_ms["decision"]) == [4000.0, 7000.0]  # from t1, not from the expiry
    assert sorted(st.latencies_ms["drift"]) == [1000.0, 1000.0]  # the first drift of each chain
    assert st.latencies_ms["approved"] == [8000.0]
    assert sorted(st.latencies_ms["audited"]) == [4000.0, 8000.0]
