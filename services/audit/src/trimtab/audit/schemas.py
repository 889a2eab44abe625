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
    #: The household the payload names (own `household_id` or its account snapshot's), if any.
    household_id: str | None = None
    #: False when the payload did not match its event schema (it is recorded all the same).
    payload_valid: bool
    #: How `leaf_hash` is made. 1 (records before the tenth session): SHA-256(0x00 || envelope
    #: bytes). 2: SHA-256(0x00 || 0x02 || recorded_at || envelope bytes), recorded_at as a signed
    #: 64-bit big-endian count of microseconds since 1970-01-01T00:00:00Z: the time of recording
    #: is under the hash, the tree and the signed checkpoints.
    leaf_format: int = 1
    leaf_hash: str
    chain_hash: str


class RecordDetailOut(RecordOut):
    prev_hash: str
    #: The envelope decoded from the stored bytes.
    envelope: dict[str, Any]
    #: The exact envelope bytes the leaf hash covers (with recorded_at in leaf format 2).
    envelope_base64: str


class RecordPage(BaseModel):
    items: list[RecordOut]
    #: Pass as `after_seq` for the next page; null when this page is the last.
    next_after_seq: int | None


class RecordTrail(BaseModel):
    """Every record of one correlation id or one proposal, in seq order (paged)."""

    records: list[RecordDetailOut]
    next_after_seq: int | None


class MismatchOut(BaseModel):
    """A place where the record fails its own checks: one record, or a run of missing records."""

    seq: int
    #: Records missing: seqs `seq` to `last_seq` are gone (counted as one place). Null: the
    #: record `seq` is there and fails the checks in `reason`.
    last_seq: int | None = None
    #: Every check that failed there, `; `-separated (no record content).
    reason: str


class VerifyOut(BaseModel):
    ok: bool
    #: Records recomputed (up to and including the first bad one).
    records_checked: int
    #: The first failure (`first_bad_seq` null for a checkpoint failure that names no record).
    first_bad_seq: int | None
    reason: str | None
    #: The extent: every place that fails its own checks, in seq order, the first 1,000 (a run of
    #: missing records is one place, named by its first seq). Empty when `ok`. A signed root that
    #: differs or a checkpoint that fails is in `reason` only, not here.
    bad_seqs: list[int] = []
    #: How many places fail in all (more than `len(bad_seqs)` when the list was capped).
    bad_count: int = 0
    #: The first 100 places, with what failed.
    mismatches: list[MismatchOut] = []
    verified_at: datetime


class CheckpointOut(BaseModel):
    """A signed tree head. The signature is Ed25519 over `signed_message` (domain/checkpoint.py)."""

    tree_size: int
    root_hash: str
    #: Exactly as signed: RFC 3339 UTC with microseconds.
    signed_at: str
    key_id: str
    #: Base64 of the 64-byte Ed25519 signature.
    signature: str
    algorithm: str = "Ed25519"


class LatestCheckpointOut(CheckpointOut):
    #: Base64 of the raw 32-byte Ed25519 public key that signed it (the service's own, or a
    #: retired or peer key it trusts); key_id = SHA-256 of it. A verifier pins it.
    public_key: str
    #: The bytes the signature covers, as text.
    signed_message: str


class InclusionProofOut(BaseModel):
    """RFC 9162 inclusion proof: leaf `leaf_index` (= seq - 1) of the tree of `tree_size` leaves."""

    leaf_index: int
    tree_size: int
    root_hash: str
    #: Sibling subtree hashes, leaf side first (RFC 6962 PATH).
    inclusion_path: list[str]
    #: The signed checkpoint this proof is against, when there is one for that size.
    checkpoint: CheckpointOut | None


class RecordProvedOut(RecordDetailOut):
    proof: InclusionProofOut | None
    #: Why `proof` is null (e.g. the record is newer than the latest checkpoint).
    proof_note: str | None = None


class ConsistencyOut(BaseModel):
    """RFC 9162 consistency proof that tree `from_size` is a prefix of tree `to_size`."""

    from_size: int
    to_size: int
    from_root: str
    to_root: str
    consistency_path: list[str]


class LeavesOut(BaseModel):
    """Leaf hashes of leaf indexes [start, end), concatenated (32 bytes each), base64.

    A missing record is 32 zero bytes at its place and its seq is listed in `missing_seqs`."""

    start: int
    end: int
    leaf_hashes: str
    missing_seqs: list[int]


class DecisionLineageOut(BaseModel):
    """Every record of a proposal's chains (tick → ... → executions), each with its proof."""

    proposal_id: uuid.UUID
    checkpoint: CheckpointOut | None
    records: list[RecordProvedOut]
    truncated: bool
