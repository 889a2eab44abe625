"""The event envelope every Kafka message carries, and how an event is born from its cause.

The envelope is the same for every topic; the payload is a typed model from `events.py`.
`correlation_id` follows the whole chain that one tick (or one API call) started; `causation_id`
names the event that directly caused this one. Both are copied by `Envelope.caused(...)`, so a
handler cannot forget them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .canonical import canonical_json

P = TypeVar("P", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str = Field(min_length=1)
    schema_version: int = Field(default=1, ge=1)
    occurred_at: datetime = Field(default_factory=utcnow)
    producer: str = Field(min_length=1)
    tenant_id: str = Field(min_length=1, max_length=64)
    correlation_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    #: W3C trace context (traceparent, tracestate) of the span that produced the event.
    trace: dict[str, str] = Field(default_factory=dict)
    payload: dict[str, Any]

    @classmethod
    def new(
        cls,
        payload: BaseModel,
        *,
        producer: str,
        tenant_id: str,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        trace: dict[str, str] | None = None,
    ) -> Envelope:
        from .events import event_type_of  # local: events imports nothing from here

        etype, version = event_type_of(type(payload))
        return cls(
            event_type=etype,
            schema_version=version,
            producer=producer,
            tenant_id=tenant_id,
            correlation_id=correlation_id or uuid.uuid4(),
            causation_id=causation_id,
            trace=trace if trace is not None else current_trace_context(),
            payload=payload.model_dump(mode="json"),
        )

    def caused(self, payload: BaseModel, *, producer: str) -> Envelope:
        """A new event caused by this one: same tenant and correlation, causation = this id."""
        from .events import event_type_of

        etype, version = event_type_of(type(payload))
        return Envelope(
            event_type=etype,
            schema_version=version,
            producer=producer,
            tenant_id=self.tenant_id,
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
            trace=current_trace_context() or dict(self.trace),
            payload=payload.model_dump(mode="json"),
        )

    def parse(self, model: type[P]) -> P:
        """The payload as its typed model (validates; raises pydantic.ValidationError)."""
        return model.model_validate(self.payload)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.model_validate_json(data)


def current_trace_context() -> dict[str, str]:
    """The active OpenTelemetry context as W3C headers (empty when no span is active)."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:  # pragma: no cover - opentelemetry is a dependency
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier
