"""A drift's snapshot states its book's recent executions, within the contract's bound: past it,
it states nothing (not checked) rather than fail the drift (review, ninth session)."""

from __future__ import annotations

from datetime import UTC, datetime

from trimtab.drift_monitor.firing import stated_executions
from trimtab.shared.events import MAX_APPLIED_EXECUTIONS, AccountSnapshot


def test_a_snapshot_states_its_executions_up_to_the_bound_and_none_past_it() -> None:
    ids = [f"EX-{i}" for i in range(MAX_APPLIED_EXECUTIONS)]
    assert stated_executions(ids) == ids
    assert stated_executions([]) == []
    assert stated_executions([*ids, "EX-one-more"]) is None

    def snapshot(applied: list[str] | None) -> AccountSnapshot:
        return AccountSnapshot(account_id="A", cash_usd=0, positions=[], targets={}, securities=[],
                               as_of=datetime(2024, 1, 2, tzinfo=UTC), applied_executions=applied)

    assert snapshot(stated_executions(ids)).applied_executions == ids  # fits the contract
    assert "applied_executions" not in snapshot(None).model_dump(mode="json")  # hashes as before
