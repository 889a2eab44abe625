"""Facts a record derives from its envelope: references, schema validity, column checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from trimtab.audit.domain.record import (
    facts_of,
    household_of,
    mismatched_columns,
    references,
    topic_for,
)
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    AccountSnapshot,
    DriftDetected,
    RiskAssessed,
    RiskModelInfo,
    SecuritySnapshot,
)

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)


def _risk(proposal_id: uuid.UUID) -> Envelope:
    p = RiskAssessed(proposal_id=proposal_id, account_id="ACC-1", pre_vol_annual_pct=Decimal("12.5"),
                     post_vol_annual_pct=Decimal("11.0"), model=RiskModelInfo(name="ewma", version="1"))
    return Envelope.new(p, producer="risk", tenant_id="t1", trace={})


def test_facts_come_from_the_envelope():
    pid = uuid.uuid4()
    env = _risk(pid)
    f = facts_of(env)
    assert (f.event_type, f.topic, f.tenant_id) == ("RiskAssessed", "risk.assessed.v1", "t1")
    assert (f.proposal_id, f.account_id, f.payload_valid) == (pid, "ACC-1", True)
    assert f.event_id == env.event_id and f.correlation_id == env.correlation_id
    assert f.causation_id is None and f.occurred_at == env.occurred_at


def test_references_are_read_leniently():
    pid = uuid.uuid4()
    assert references({"proposal_id": str(pid), "account_id": "A"}) == (pid, "A")
    assert references({"proposal_id": "not-a-uuid", "account_id": 7}) == (None, None)
    assert references({"account_id": "x" * 65}) == (None, None)
    assert references({}) == (None, None)


def test_an_invalid_payload_is_still_a_fact_but_marked():
    env = _risk(uuid.uuid4())
    bad = env.model_copy(update={"payload": {**env.payload, "pre_vol_annual_pct": "lots"}})
    f = facts_of(bad)
    assert f.payload_valid is False and f.account_id == "ACC-1"
    assert topic_for("NoSuchEvent") == "unknown:NoSuchEvent"


def test_naive_occurred_at_is_read_as_utc():
    env = _risk(uuid.uuid4()).model_copy(update={"occurred_at": datetime(2024, 1, 2, 21, 0)})
    assert facts_of(env).occurred_at == T0


def test_columns_that_disagree_with_the_envelope_are_named():
    env = _risk(uuid.uuid4())
    stored = facts_of(env).columns()
    data = env.to_bytes()
    assert mismatched_columns(stored, data) == []
    assert mismatched_columns({**stored, "tenant_id": "t2"}, data) == ["tenant_id"]
    assert mismatched_columns({**stored, "proposal_id": None, "event_type": "X"}, data) == ["event_type", "proposal_id"]
    assert mismatched_columns(stored, b"{not json") == ["envelope"]


def _drift(household_id: str | None) -> Envelope:
    snapshot = AccountSnapshot(account_id="ACC-1", household_id=household_id, cash_usd=Decimal("100"),
                               positions=[], targets={"AAA": Decimal("1")},
                               securities=[SecuritySnapshot(symbol="AAA", price_usd=Decimal("10"))], as_of=T0)
    p = DriftDetected(drift_id=uuid.uuid4(), account_id="ACC-1", snapshot=snapshot, total_value_usd=Decimal("100"),
                      weights={}, deviations={}, max_abs_deviation=Decimal("0.3"), rule="band_abs", breached=["AAA"])
    return Envelope.new(p, producer="drift-monitor", tenant_id="t1", trace={})


def test_the_household_comes_from_the_snapshot_or_the_payload():
    env = _drift("HH-7")
    f = facts_of(env)
    assert (f.account_id, f.household_id, f.payload_valid) == ("ACC-1", "HH-7", True)
    assert facts_of(_drift(None)).household_id is None
    # Events that name only the account (RiskAssessed, decisions, trades) carry no household.
    assert facts_of(_risk(uuid.uuid4())).household_id is None
    # A payload's own household_id wins; a malformed one falls back to the snapshot's, then None.
    assert household_of({"household_id": "HH-1", "snapshot": {"household_id": "HH-2"}}) == "HH-1"
    assert household_of({"household_id": 7, "snapshot": {"household_id": "HH-2"}}) == "HH-2"
    assert household_of({"household_id": "x" * 65}) is None
    assert household_of({"household_id": ""}) is None
    assert household_of({"snapshot": "not an object"}) is None
    assert household_of({"snapshot": {"household_id": None}}) is None
    # An invalid payload still has its household indexed, like its account.
    bad = env.model_copy(update={"payload": {**env.payload, "total_value_usd": "lots"}})
    assert facts_of(bad).payload_valid is False and facts_of(bad).household_id == "HH-7"


def test_a_household_column_that_disagrees_with_the_envelope_is_named():
    env = _drift("HH-7")
    stored = facts_of(env).columns()
    data = env.to_bytes()
    assert stored["household_id"] == "HH-7" and mismatched_columns(stored, data) == []
    assert mismatched_columns({**stored, "household_id": "HH-8"}, data) == ["household_id"]
    assert mismatched_columns({**stored, "household_id": None}, data) == ["household_id"]
