"""What a record says about its event: the indexed columns, all derived from the envelope bytes.

The columns beside the envelope (tenant, correlation, event type, proposal, account, household,
...) exist so
queries do not parse every envelope; they are never trusted on their own. Verification derives them
again from the hashed bytes, so a row moved to another tenant or correlation by editing a column
is caught even though its hashes still agree.

The audit service records what happened on the bus, valid or not: a payload that fails its
schema is still recorded (with `payload_valid` false) rather than dropped, and references are
read from the raw payload so that they are indexed either way. So is a message of a foreign
producer that is not one of our canonical envelopes (domain/bus.py): `topic = foreign:<topic>`,
`payload_valid` false, its envelope as read stored beside its exact bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from trimtab.shared.envelope import Envelope
from trimtab.shared.events import EVENTS

from .bus import envelope_of_stored

#: Column width of account_id; a longer value is not a reference this service can index.
ACCOUNT_ID_MAX = 64
#: Column width of household_id, likewise.
HOUSEHOLD_ID_MAX = 64
#: Column width of topic.
TOPIC_MAX = 200


@dataclass(frozen=True)
class RecordFacts:
    event_id: uuid.UUID
    event_type: str
    topic: str
    tenant_id: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    occurred_at: datetime
    proposal_id: uuid.UUID | None
    account_id: str | None
    #: The household a payload names: its own `household_id`, else its account snapshot's
    #: (DriftDetected, RebalanceProposed). Most events name only the account.
    household_id: str | None
    payload_valid: bool

    def columns(self) -> dict[str, Any]:
        return asdict(self)


def topic_for(event_type: str) -> str:
    entry = EVENTS.get(event_type)
    return entry[0] if entry else f"unknown:{event_type}"


def foreign_topic_column(bus_topic: str) -> str:
    """The `topic` column of a foreign record (domain/bus.py): `foreign:<the topic it was read
    from>`, beside `unknown:<type>` for a well-formed event of a type the record does not know."""
    return f"foreign:{bus_topic}"[:TOPIC_MAX]


def _uuid_or_none(value: object) -> uuid.UUID | None:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


def references(payload: Mapping[str, Any]) -> tuple[uuid.UUID | None, str | None]:
    """(proposal_id, account_id) named at the top level of a payload, when well-formed."""
    account = payload.get("account_id")
    if not isinstance(account, str) or not account or len(account) > ACCOUNT_ID_MAX:
        account = None
    return _uuid_or_none(payload.get("proposal_id")), account


def _short_id(value: object, max_len: int) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= max_len else None


def household_of(payload: Mapping[str, Any]) -> str | None:
    """The household a payload names, when well-formed: its top-level `household_id`, else
    `snapshot.household_id` (the AccountSnapshot of DriftDetected and RebalanceProposed)."""
    own = _short_id(payload.get("household_id"), HOUSEHOLD_ID_MAX)
    if own is not None:
        return own
    snapshot = payload.get("snapshot")
    return _short_id(snapshot.get("household_id"), HOUSEHOLD_ID_MAX) if isinstance(snapshot, Mapping) else None


def payload_is_valid(env: Envelope) -> bool:
    entry = EVENTS.get(env.event_type)
    if entry is None:
        return False
    try:
        env.parse(entry[1])
    except ValidationError:
        return False
    return True


def facts_of(env: Envelope, *, foreign_topic: str | None = None) -> RecordFacts:
    """The columns of `env`'s record. `foreign_topic`: the topic a foreign message was read from
    (domain/bus.py); its record is `foreign:<topic>` and never `payload_valid`, whatever its
    payload: it is not a well-formed event of ours."""
    proposal_id, account_id = references(env.payload)
    occurred_at = env.occurred_at
    if occurred_at.tzinfo is None:  # canonical JSON reads a naive time as UTC; so does the column
        occurred_at = occurred_at.replace(tzinfo=UTC)
    foreign = foreign_topic is not None
    return RecordFacts(
        event_id=env.event_id, event_type=env.event_type,
        topic=foreign_topic_column(foreign_topic) if foreign_topic is not None else topic_for(env.event_type),
        tenant_id=env.tenant_id, correlation_id=env.correlation_id, causation_id=env.causation_id,
        occurred_at=occurred_at, proposal_id=proposal_id, account_id=account_id,
        household_id=household_of(env.payload), payload_valid=not foreign and payload_is_valid(env),
    )


def mismatched_columns(stored: Mapping[str, Any], envelope: bytes) -> list[str]:
    """Names of the stored columns that disagree with what the envelope bytes say (a foreign
    document's: what its envelope and its topic say)."""
    try:
        env, foreign_topic = envelope_of_stored(envelope)
        expected = facts_of(env, foreign_topic=foreign_topic).columns()
    except (ValidationError, ValueError):
        return ["envelope"]
    return sorted(k for k, v in expected.items() if stored.get(k) != v)
