"""How the record reads a message on the bus: as our producers send it, or as a foreign one.

Our producers send `Envelope.to_bytes()`: every field, canonical JSON. Such a message is recorded
as those bytes, exactly as before this module existed (the bytes hashed are the bytes on the bus).

Anything else that still reads as an envelope is *foreign*: a field missing (`event_id`,
`occurred_at`, `correlation_id`, to which the envelope model would give a new random value on
every parse), a defaulted field holding no valid value, fields the envelope does not have, or
bytes that are not the canonical bytes of the envelope they parse to (`1e400`, which the model
reads as infinity and writes as `null`; other spacing, key order or number forms; a key given
twice). The record then stores a *foreign document*: the envelope as read, with each missing
value derived from the message's place on the bus, and under `"foreign"` the exact bytes on the
bus, that place and the reasons:

    {<the envelope's fields, as read>,
     "foreign": {"version": 1, "topic": ..., "partition": ..., "offset": ..., "timestamp_ms": ...,
                 "bytes_base64": <the bytes on the bus>, "reasons": [...]}}

in canonical JSON. The leaf hash covers this document, so the original bytes are as
tamper-evident as any record; the envelope beside them carries the indexed columns (event id,
tenant, references), so every reader of the record (the verifiers, the exports) reads a foreign
record like any other. No envelope can hold a `"foreign"` field (the model forbids unknown
fields), so a stored document is a foreign one exactly when it has that key.

Derived values, all functions of the message's place on the bus, so a redelivery (the same
offset read again after a crash or a rebalance before the offset commit) gets the same ones:

* `event_id` = UUID v5 in `NAMESPACE` of `"<topic>/<partition>/<offset>/<timestamp_ms>"`, so the
  consumer's processed-event marker and the record's own id check recognise the redelivery.
  The same bytes produced twice sit at two offsets: two messages, two records.
* `occurred_at` = the message's broker timestamp (epoch 0 when it has none).
* `correlation_id` = the event id: the message starts a correlation of its own.

Messages that do not read as an envelope even so (not JSON, not an object, no valid
`event_type`, `producer`, `tenant_id` or `payload`) raise, and the consumer dead-letters them as
undecodable, with their topic, partition and offset: the record is per tenant, and such a
message names none that it could be recorded for.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from trimtab.shared.canonical import canonical_json
from trimtab.shared.envelope import Envelope

#: The namespace of derived event ids (uuid5). Fixed for good: changing it would give a
#: redelivery of a message recorded before the change another id.
NAMESPACE = uuid.UUID("6b0f3c52-4d1e-5a8f-9c27-1f4e8d2a7b90")
#: The key of a stored foreign document's own section.
FOREIGN = "foreign"
FOREIGN_VERSION = 1
#: Fields whose value, when missing or invalid, the record derives from the message's place on
#: the bus or takes as the model's fixed default (schema_version 1, no causation, no trace).
DERIVED = ("event_id", "occurred_at", "correlation_id")
DEFAULTED = (*DERIVED, "schema_version", "causation_id", "trace")
_UUID = TypeAdapter(uuid.UUID)
_set = object.__setattr__


class BusEnvelope(Envelope):
    """An envelope as the record read it off the bus: the same fields (its `to_bytes()` is an
    Envelope's), plus what the record stores for it, which the handler takes as is.

    Its slots: `_stored`, what the record stores (`to_bytes()` for one of ours, which equals
    the bytes on the bus; the foreign document for anything else); `_bus`, the exact bytes on
    the bus; `_foreign_topic`, the topic a foreign message was read from (None for ours). Plain
    slots, set by `read`, not annotated: pydantic would make annotated ones private attributes,
    which cost a post-init hook on every validation (~1.5 µs, a tenth of the consumer's work
    on one of our events)."""

    __slots__ = ("_stored", "_bus", "_foreign_topic")


def derived_event_id(topic: str, partition: int, offset: int, timestamp_ms: int | None) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{topic}/{partition}/{offset}/{timestamp_ms if timestamp_ms is not None else ''}")


def broker_time(timestamp_ms: int | None) -> datetime:
    ms = timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else 0
    return datetime.fromtimestamp(ms / 1000, UTC)


def read_record(rec: Any) -> Envelope:
    """The audit consumer's decoder (`BatchHandler.decode`): `read` of a Kafka ConsumerRecord."""
    return read(rec.value, topic=rec.topic, partition=rec.partition, offset=rec.offset,
                timestamp_ms=getattr(rec, "timestamp", None))


def read(value: bytes | None, *, topic: str, partition: int, offset: int, timestamp_ms: int | None) -> BusEnvelope:
    """The envelope the record makes of the message `value` at (topic, partition, offset).

    Raises ValueError (not JSON, not an object) or ValidationError (not an envelope even with
    the derived values) for a message that cannot be recorded: the consumer dead-letters it."""
    if value is None:
        raise ValueError("no value (a tombstone): not an envelope")
    try:
        env = BusEnvelope.model_validate_json(value)
    except ValidationError:
        env = None
    if env is not None:
        data = env.to_bytes()
        if data == value:  # one of ours: stored exactly as before
            _keep(env, data, value, None)
            return env
    return _read_foreign(value, topic, partition, offset, timestamp_ms)


def _read_foreign(value: bytes, topic: str, partition: int, offset: int, timestamp_ms: int | None) -> BusEnvelope:
    try:
        # The parser the envelope model uses: what it accepted, this accepts too.
        doc = from_json(value)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"not an envelope: a JSON {type(doc).__name__}, not an object")
    reasons: list[str] = []
    known = Envelope.model_fields
    extra = sorted(k for k in doc if k not in known)
    fields = {k: v for k, v in doc.items() if k in known}
    if extra:
        reasons.append(f"fields the envelope does not have (kept in the bytes only): {', '.join(extra)}")
    for k in DEFAULTED:
        if k in fields and fields[k] is None and k != "causation_id":
            del fields[k]
            reasons.append(f"{k} is null")
    if "event_id" in fields:  # checked first: a derived correlation id is the event id
        try:
            fields["event_id"] = _UUID.validate_python(fields["event_id"])
        except ValidationError:
            del fields["event_id"]
            reasons.append("event_id is not a UUID")
    # Each pass drops the defaulted values that are invalid (derived or defaulted instead); a
    # value of any other field that is invalid makes the message undecodable.
    for _ in range(len(DEFAULTED)):
        _fill(fields, reasons, topic, partition, offset, timestamp_ms)
        try:
            env = BusEnvelope.model_validate(fields)
            break
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            fixable = {k for k in bad if k in DEFAULTED and k in fields and k in doc}
            if not fixable or bad - fixable:
                raise
            for k in sorted(fixable):
                del fields[k]
                reasons.append(f"{k} is not valid")
    else:  # pragma: no cover - every pass drops at least one of DEFAULTED
        env = BusEnvelope.model_validate(fields)
    if not reasons:
        reasons.append("the bytes on the bus are not the canonical bytes of the envelope they read as "
                       "(a number the envelope cannot hold exactly, such as 1e400, a key given twice, "
                       "or other spacing, key order or number forms)")
    document = env.model_dump(mode="json")
    document[FOREIGN] = {
        "version": FOREIGN_VERSION, "topic": topic, "partition": partition, "offset": offset,
        "timestamp_ms": timestamp_ms, "bytes_base64": base64.b64encode(value).decode(), "reasons": reasons,
    }
    _keep(env, canonical_json(document), value, topic)
    return env


def _keep(env: BusEnvelope, stored: bytes, arrived: bytes, topic: str | None) -> None:
    # object.__setattr__: the model's own __setattr__ costs ~0.4 µs per attribute (its checks
    # for fields and private attributes), which is most of what reading one of ours adds.
    _set(env, "_stored", stored)
    _set(env, "_bus", arrived)
    _set(env, "_foreign_topic", topic)


def _fill(fields: dict[str, Any], reasons: list[str], topic: str, partition: int, offset: int,
          timestamp_ms: int | None) -> None:
    if "event_id" not in fields:
        fields["event_id"] = derived_event_id(topic, partition, offset, timestamp_ms)
        reasons.append("no event_id: derived from the message's place on the bus "
                       "(uuid5 of topic/partition/offset/timestamp_ms)")
    if "occurred_at" not in fields:
        fields["occurred_at"] = broker_time(timestamp_ms)
        reasons.append("no occurred_at: the broker's timestamp")
    if "correlation_id" not in fields:
        fields["correlation_id"] = fields["event_id"]
        reasons.append("no correlation_id: the event id")


# ------------------------------------------------------------------ what the record stores


def stored_bytes(env: Envelope) -> bytes:
    """The bytes the record stores for `env`; for an envelope built in-process rather than read
    off the bus (tests, tools), its canonical bytes, as our relays would send it."""
    stored = getattr(env, "_stored", None)
    return stored if stored is not None else env.to_bytes()


def bus_bytes(env: Envelope, stored: bytes) -> bytes:
    """The bytes `env` arrived as (`stored`: its `stored_bytes`)."""
    arrived = getattr(env, "_bus", None)
    return arrived if arrived is not None else stored


def foreign_topic(env: Envelope) -> str | None:
    """The topic a foreign message was read from; None for one of ours."""
    return getattr(env, "_foreign_topic", None)


def foreign_section(stored: bytes) -> Mapping[str, Any] | None:
    """The `"foreign"` section of a stored record, None for one of ours. Cheap for ours: only a
    document that has the key at all is parsed."""
    if b'"foreign":' not in stored:
        return None
    try:
        doc = json.loads(stored)
    except ValueError:
        return None
    section = doc.get(FOREIGN) if isinstance(doc, dict) else None
    return section if isinstance(section, dict) else None


def original_bytes(stored: bytes) -> bytes:
    """The bytes a stored record's message arrived as: the foreign document's `bytes_base64`,
    or the stored bytes themselves for one of ours."""
    section = foreign_section(stored)
    if section is None:
        return stored
    try:
        return base64.b64decode(section["bytes_base64"], validate=True)
    except (KeyError, TypeError, ValueError):
        return stored


def envelope_of_stored(stored: bytes) -> tuple[Envelope, str | None]:
    """The envelope a stored record holds, and the bus topic when it is a foreign document.
    Raises ValueError / ValidationError when the bytes are neither."""
    try:
        return Envelope.from_bytes(stored), None
    except ValidationError:
        doc = json.loads(stored)
        if not isinstance(doc, dict) or not isinstance(doc.get(FOREIGN), dict):
            raise
        section = doc.pop(FOREIGN)
        topic = section.get("topic")
        if not isinstance(topic, str):
            raise ValueError("a foreign document without its topic") from None
        return Envelope.model_validate(doc), topic
