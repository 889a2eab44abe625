"""How the record reads a message off the bus (domain/bus.py): ours exactly as before, a foreign
one with the missing values derived from its place on the bus and its exact bytes kept; and that
the shared consumer reads every message of the audit's consumer with that decoder."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from trimtab.audit.domain import bus
from trimtab.audit.domain.record import facts_of, mismatched_columns
from trimtab.shared.consumer import BatchHandler, EventConsumer, decode_envelope
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    AccountSnapshot,
    DriftDetected,
    LotSnapshot,
    PositionSnapshot,
    PriceTicked,
    SecuritySnapshot,
)

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
TS = 1_704_229_200_123  # ms
AT = {"topic": "market.ticks.v1", "partition": 1, "offset": 42, "timestamp_ms": TS}


def _ours() -> list[Envelope]:
    snapshot = AccountSnapshot(
        account_id="ACC-1", household_id="HH-é", cash_usd=Decimal("1000.10"),
        positions=[PositionSnapshot(symbol="AAA", shares=Decimal("100"), lots=[LotSnapshot(
            lot_id="L1", shares=Decimal("100"), cost_basis_usd_per_share=Decimal("80"),
            acquired_on=date(2022, 5, 1))])],
        targets={"AAA": Decimal("0.5"), "BBB": Decimal("0.5")},
        securities=[SecuritySnapshot(symbol="AAA", price_usd=Decimal("101.25"))], as_of=T0)
    tick = Envelope.new(PriceTicked(symbol="AAA", price_usd=Decimal("101.25"), as_of=T0),
                        producer="market-data", tenant_id="t1", trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    drift = tick.caused(DriftDetected(
        drift_id=uuid.uuid4(), account_id="ACC-1", snapshot=snapshot, total_value_usd=Decimal("11125"),
        weights={"AAA": Decimal("0.91")}, deviations={"AAA": Decimal("0.41")}, max_abs_deviation=Decimal("0.41"),
        rule="band_abs", breached=["AAA"]), producer="drift-monitor")
    odd = Envelope(event_type="SomethingNew", producer="x", tenant_id="t1",
                   payload={"f": 0.1, "big": 2**70, "neg": -0.0, "s": "\u2028 ☃ \\ \"", "n": None, "l": [1.5e300, {}]})
    return [tick, drift, odd]


def test_our_events_are_read_and_stored_exactly_as_before():
    for env in _ours():
        data = env.to_bytes()
        got = bus.read(data, **AT)
        assert bus.stored_bytes(got) == data and bus.bus_bytes(got, data) == data
        assert bus.foreign_topic(got) is None and got.event_id == env.event_id
        assert got.to_bytes() == data and got.model_dump() == env.model_dump()
        assert facts_of(got, foreign_topic=bus.foreign_topic(got)) == facts_of(env)
        assert bus.original_bytes(data) == data and bus.foreign_section(data) is None
    # An envelope built in-process (not read off the bus) is stored as its canonical bytes.
    env = _ours()[0]
    assert bus.stored_bytes(env) == env.to_bytes() and bus.foreign_topic(env) is None


def _foreign(**payload: object) -> bytes:
    return json.dumps({"event_type": "PriceTicked", "producer": "vendor", "tenant_id": "t1",
                       "payload": {"symbol": "AAA", "as_of": "2024-01-02T21:00:00Z", **payload}}).encode()


def test_a_message_without_ids_gets_them_from_its_place_on_the_bus():
    raw = _foreign(price_usd=1.5)
    a, b = bus.read(raw, **AT), bus.read(raw, **AT)  # a redelivery: the same place
    assert a.event_id == b.event_id == uuid.uuid5(bus.NAMESPACE, f"market.ticks.v1/1/42/{TS}")
    assert bus.stored_bytes(a) == bus.stored_bytes(b)
    assert a.correlation_id == a.event_id and a.occurred_at == datetime.fromtimestamp(TS / 1000, UTC)
    other = bus.read(raw, **{**AT, "offset": 43})  # the same bytes again: another message
    assert other.event_id != a.event_id
    assert bus.read(raw, **{**AT, "partition": 0}).event_id != a.event_id
    assert bus.read(raw, **{**AT, "timestamp_ms": TS + 1}).event_id != a.event_id  # a recreated topic

    stored = bus.stored_bytes(a)
    assert bus.foreign_topic(a) == "market.ticks.v1" and bus.bus_bytes(a, stored) == raw
    doc = json.loads(stored)
    assert stored == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    section = doc.pop("foreign")
    assert base64.b64decode(section["bytes_base64"]) == raw and bus.original_bytes(stored) == raw
    assert {k: section[k] for k in ("topic", "partition", "offset", "timestamp_ms", "version")} == {
        "topic": "market.ticks.v1", "partition": 1, "offset": 42, "timestamp_ms": TS, "version": 1}
    assert [r.split(":")[0] for r in section["reasons"]] == ["no event_id", "no occurred_at", "no correlation_id"]
    assert Envelope.model_validate(doc).to_bytes() == a.to_bytes()  # the envelope as read

    f = facts_of(a, foreign_topic=bus.foreign_topic(a))
    assert (f.topic, f.payload_valid, f.event_type, f.tenant_id) == ("foreign:market.ticks.v1", False, "PriceTicked", "t1")
    # What verification derives from the stored bytes is what was written.
    assert mismatched_columns(f.columns(), stored) == []
    assert mismatched_columns({**f.columns(), "payload_valid": True}, stored) == ["payload_valid"]
    assert mismatched_columns({**f.columns(), "topic": "market.ticks.v1"}, stored) == ["topic"]
    env, topic = bus.envelope_of_stored(stored)
    assert topic == "market.ticks.v1" and env.event_id == a.event_id


def test_values_the_envelope_cannot_hold_are_kept_in_the_original_bytes():
    raw = (b'{"event_id":"%s","event_type":"PriceTicked","producer":"vendor","tenant_id":"t1",'
           b'"occurred_at":"2024-01-02T21:00:00Z","correlation_id":"%s",'
           b'"payload":{"price_usd":1e400,"q":NaN,"symbol":"AAA"}}' % (str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode()))
    got = bus.read(raw, **AT)
    assert str(got.event_id) == json.loads(raw)["event_id"]  # its own id is kept
    stored = bus.stored_bytes(got)
    assert json.loads(stored)["payload"] == {"price_usd": None, "q": None, "symbol": "AAA"}
    assert bus.original_bytes(stored) == raw and b"1e400" in bus.original_bytes(stored)
    assert "not the canonical bytes" in json.loads(stored)["foreign"]["reasons"][0]
    # Our canonical bytes with other spacing: foreign too, and kept as sent.
    env = _ours()[0]
    spaced = json.dumps(json.loads(env.to_bytes()), indent=1).encode()
    got = bus.read(spaced, **AT)
    assert got.event_id == env.event_id and bus.foreign_topic(got) == "market.ticks.v1"
    assert bus.original_bytes(bus.stored_bytes(got)) == spaced


def test_unknown_fields_and_invalid_defaulted_values_are_named_not_fatal():
    doc = {"event_id": "evt-17", "event_type": "PriceTicked", "producer": "vendor", "tenant_id": "t1",
           "payload": {}, "correlation_id": 5, "occurred_at": "yesterday", "schema_version": 0, "trace": [1],
           "causation_id": None, "source": "vendor-x", "foreign": {"bytes_base64": "Zm9yZ2Vk"}}
    raw = json.dumps(doc).encode()
    got = bus.read(raw, **AT)
    assert got.event_id == bus.derived_event_id("market.ticks.v1", 1, 42, TS) == got.correlation_id
    assert (got.schema_version, got.trace, got.occurred_at) == (1, {}, bus.broker_time(TS))
    stored = bus.stored_bytes(got)
    reasons = json.loads(stored)["foreign"]["reasons"]
    assert reasons[0] == "fields the envelope does not have (kept in the bytes only): foreign, source"
    for name in ("event_id is not a UUID", "correlation_id is not valid", "occurred_at is not valid",
                 "schema_version is not valid", "trace is not valid"):
        assert name in reasons
    # A "foreign" field of the message cannot pass for the record's own section.
    assert bus.original_bytes(stored) == raw
    assert bus.read(json.dumps({**doc, "event_id": None, "source": None}).encode(), **AT).event_id == got.event_id


@pytest.mark.parametrize(("value", "error"), [
    (b"\x00\x01 not json", ValueError), (b"", ValueError), (b"[1, 2]", ValueError), (b'"x"', ValueError),
    (b'{"event_type": "X", "producer": "p", "payload": {}}', ValidationError),  # no tenant
    (b'{"event_type": "X", "producer": "p", "tenant_id": "t", "payload": []}', ValidationError),
    (b'{"event_type": "", "producer": "p", "tenant_id": "t", "payload": {}}', ValidationError),
])
def test_what_is_no_envelope_at_all_raises_for_the_dead_letter_queue(value, error):
    with pytest.raises(error):
        bus.read(value, **AT)
    with pytest.raises(ValueError, match="tombstone"):
        bus.read(None, **AT)
    with pytest.raises(ValueError, match="not JSON"):
        bus.read(b"{nope", **AT)


def test_read_record_takes_the_place_from_the_kafka_record():
    raw = _foreign(price_usd=1)
    rec = SimpleNamespace(topic="market.ticks.v1", partition=1, offset=42, timestamp=TS, value=raw, key=b"K")
    assert bus.read_record(rec).event_id == bus.derived_event_id("market.ticks.v1", 1, 42, TS)


def _consumer(handlers: dict) -> EventConsumer:
    return EventConsumer(name="audit", group_id="g", bootstrap="-", handlers=handlers, topics=["market.ticks.v1"],
                         sessionmaker=None, infra=None, producer=None)  # type: ignore[arg-type]


def test_the_consumer_reads_with_the_decoder_its_batch_handler_brings():
    async def fn(envs, uow):  # type: ignore[no-untyped-def]
        return None

    record = BatchHandler(fn)
    assert record.decode is None and _consumer({"PriceTicked": record})._decode is decode_envelope  # noqa: SLF001
    record.decode = bus.read_record  # as the audit app does
    c = _consumer({"PriceTicked": record, "*": record})
    raw = _foreign(price_usd=1)
    rec = SimpleNamespace(topic="market.ticks.v1", partition=1, offset=42, timestamp=TS, value=raw, key=b"K", headers=[])
    env = c._batchable(rec)  # noqa: SLF001
    assert env is not None and env.event_id == bus.derived_event_id("market.ticks.v1", 1, 42, TS)
    assert c._batchable(rec).event_id == env.event_id  # noqa: SLF001 - read again: the same id
    # Without the decoder (every other consumer), the envelope model's own parse: a new id each time.
    plain = _consumer({"PriceTicked": BatchHandler(fn)})
    assert plain._batchable(rec).event_id != plain._batchable(rec).event_id  # noqa: SLF001
    with pytest.raises(ValueError, match="decoders"):
        _consumer({"PriceTicked": BatchHandler(fn, decode=bus.read_record),
                   "*": BatchHandler(fn, decode=decode_envelope)})
