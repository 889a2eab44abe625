"""Unit tests of the event contract, canonical JSON, money and auth (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from trimtab.shared.auth import decode_token, mint_token
from trimtab.shared.canonical import canonical_hash, canonical_json
from trimtab.shared.config import ServiceSettings
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import Unauthorized
from trimtab.shared.events import EVENTS, TOPICS, PriceTicked, dlq_topic, event_type_of, topic_of
from trimtab.shared.money import from_cents, to_cents, usd


def _tick() -> PriceTicked:
    return PriceTicked(symbol="AAPL", price_usd=Decimal("123.45"), as_of=datetime(2024, 1, 2, 21, tzinfo=UTC))


def test_envelope_roundtrip_and_causation() -> None:
    env = Envelope.new(_tick(), producer="market-data", tenant_id="t1")
    assert env.event_type == "PriceTicked" and env.schema_version == 1
    back = Envelope.from_bytes(env.to_bytes())
    assert back == env
    assert back.parse(PriceTicked).price_usd == Decimal("123.45")
    child = env.caused(_tick(), producer="drift-monitor")
    assert child.correlation_id == env.correlation_id and child.causation_id == env.event_id
    assert child.tenant_id == "t1" and child.event_id != env.event_id


def test_money_is_a_string_on_the_wire() -> None:
    env = Envelope.new(_tick(), producer="x", tenant_id="t1")
    assert b'"price_usd":"123.45"' in env.to_bytes()


def test_envelope_rejects_unknown_fields_and_missing_tenant() -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate({"event_type": "X", "producer": "p", "tenant_id": "", "payload": {}})
    with pytest.raises(ValidationError):
        Envelope.model_validate({"event_type": "X", "producer": "p", "tenant_id": "t", "payload": {}, "extra": 1})


def test_registry_is_complete_and_consistent() -> None:
    assert len(TOPICS) == 10
    for etype, (topic, model, version) in EVENTS.items():
        assert topic.endswith(".v1") and version == 1
        assert event_type_of(model) == (etype, 1) and topic_of(etype) == topic
    assert dlq_topic("market.ticks.v1") == "market.ticks.v1.dlq"


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5),
                                                          st.decimals(allow_nan=False, allow_infinity=False))))
def test_canonical_json_is_key_order_independent(d: dict) -> None:
    rev = dict(reversed(list(d.items())))
    assert canonical_json(d) == canonical_json(rev)
    assert canonical_hash(d) == canonical_hash(rev)


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_cents_roundtrip(cents: int) -> None:
    assert to_cents(from_cents(cents)) == cents


def test_usd_rounds_half_even_and_floats_via_repr() -> None:
    assert usd(0.1) == Decimal("0.10")
    assert usd("2.675") == Decimal("2.68") and usd("2.665") == Decimal("2.66")


def test_tokens_carry_tenant_and_scopes_and_are_verified() -> None:
    s = ServiceSettings()
    p = decode_token(s, mint_token(s, subject="a@b", tenant_id="firm1", scopes=["book:read"]))
    assert p.tenant_id == "firm1" and p.scopes == {"book:read"}
    with pytest.raises(Unauthorized):
        decode_token(s, mint_token(s, subject="a", tenant_id="f", ttl_s=-10))
    other = ServiceSettings.model_validate({"JWT_SECRET": "another-secret-of-sufficient-length-123456"})
    with pytest.raises(Unauthorized):
        decode_token(s, mint_token(other, subject="a", tenant_id="f"))
