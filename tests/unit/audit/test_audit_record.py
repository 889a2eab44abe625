"""Facts a record derives from its envelope: references, schema validity, column checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from trimtab.audit.domain.record import facts_of, mismatched_columns, references, topic_for
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import RiskAssessed, RiskModelInfo

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
