"""Response models of the audit API (separate from the table): hashes as lowercase hex."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel


class RecordOut(BaseModel):
    seq: int
    event_id: uuid.UUID
    event_type: str
    topic: str
    tenant_id: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    occurred_at: datetime
    recorded_at: datetime
    proposal_id: uuid.UUID | None
    account_id: str | None
    #: False when the payload did not match its event schema (it is recorded all the same).
    payload_valid: bool
    leaf_hash: str
    chain_hash: str


class RecordDetailOut(RecordOut):
    prev_hash: str
    #: The envelope decoded from the stored bytes.
    envelope: dict[str, Any]
    #: The exact bytes the leaf hash covers: leaf_hash = SHA-256(0x00 || these bytes).
    envelope_base64: str


class RecordPage(BaseModel):
    items: list[RecordOut]
    #: Pass as `after_seq` for the next page; null when this page is the last.
    next_after_seq: int | None


class RecordTrail(BaseModel):
    """Every record of one correlation id or one proposal, in seq order (paged)."""

    records: list[RecordDetailOut]
    next_after_seq: int | None


class VerifyOut(BaseModel):
    ok: bool
    #: Records recomputed (up to and including the first bad one).
    records_checked: int
    first_bad_seq: int | None
    reason: str | None
    verified_at: datetime
