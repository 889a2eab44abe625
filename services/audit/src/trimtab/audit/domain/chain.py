"""The hash chain over the audit record: leaf hashes, chain hashes, and streaming verification.

Every record's leaf is `SHA-256(0x00 || envelope bytes)`, the RFC 6962 / RFC 9162 leaf hash, so a
Merkle tree (inclusion and consistency proofs) can later be built over exactly these leaves. The
0x00 prefix separates leaves from interior nodes (`0x01 || left || right`), so no interior node can
be passed off as a leaf.

Until then the records form a linear chain: `chain_hash = SHA-256(prev_chain_hash || leaf_hash)`
with 32 zero bytes before the first record. Changing, removing, inserting or reordering any record
changes every chain hash from that point on, and the verifier names the first seq where the stored
values stop agreeing with the recomputation.

What a chain alone cannot show is a cut-off tail: deleting the last k records leaves a shorter but
consistent chain. Comparing the head with a checkpoint kept outside the database catches that.

`ChainVerifier` names the first failure and stops; `ChainScanner` judges every record on its own
and goes on, so that a verifier can also say how far a tampering reaches (which records).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HASH_BYTES = 32
GENESIS_HASH = b"\x00" * HASH_BYTES
LEAF_PREFIX = b"\x00"


#: Leaf formats (the `leaf_format` column). 1: the envelope alone, `SHA-256(0x00 || envelope)`:
#: every record before the tenth session; its `recorded_at` is outside every hash. 2: the time the
#: record was recorded with it, `SHA-256(0x00 || 0x02 || recorded_at || envelope)`, recorded_at as
#: a signed 64-bit big-endian count of microseconds since 1970-01-01T00:00:00Z (RFC 6962's own
#: leaf is likewise a timestamped entry). The byte 0x02 cannot start a format-1 leaf's input (an
#: envelope is a JSON object: "{"), so the two never collide.
LEAF_FORMAT_ENVELOPE = 1
LEAF_FORMAT_TIMESTAMPED = 2
#: What the service writes.
LEAF_FORMAT = LEAF_FORMAT_TIMESTAMPED
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def leaf_hash(envelope: bytes) -> bytes:
    """RFC 6962 leaf hash of one record's canonical envelope bytes (leaf format 1)."""
    return hashlib.sha256(LEAF_PREFIX + envelope).digest()


def micros(t: datetime) -> int:
    """`t` as whole microseconds since the Unix epoch (exact: no float)."""
    if t.tzinfo is None:
        raise ValueError("recorded_at must carry a time zone")
    return (t - _EPOCH) // _US


def record_leaf_hash(envelope: bytes, recorded_at: datetime | None, leaf_format: int = LEAF_FORMAT_ENVELOPE) -> bytes:
    """The leaf hash of a stored record in its `leaf_format` (see LEAF_FORMAT_*)."""
    if leaf_format == LEAF_FORMAT_ENVELOPE:
        return leaf_hash(envelope)
    if leaf_format == LEAF_FORMAT_TIMESTAMPED:
        if recorded_at is None:
            raise ValueError("a timestamped leaf needs its recorded_at")
        return hashlib.sha256(LEAF_PREFIX + b"\x02" + micros(recorded_at).to_bytes(8, "big", signed=True)
                              + envelope).digest()
    raise ValueError(f"unknown leaf format {leaf_format}")


def chain_hash(prev_chain_hash: bytes, leaf: bytes) -> bytes:
    """The chain hash of a record, binding it to everything before it."""
    if len(prev_chain_hash) != HASH_BYTES or len(leaf) != HASH_BYTES:
        raise ValueError("chain hashes and leaf hashes are 32 bytes")
    return hashlib.sha256(prev_chain_hash + leaf).digest()


def leaf_differs(leaf_format: int) -> str:
    """The reason given when a record's leaf hash is not what it hashes to."""
    if leaf_format == LEAF_FORMAT_ENVELOPE:
        return "leaf hash does not match the envelope bytes"
    if leaf_format == LEAF_FORMAT_TIMESTAMPED:
        return "leaf hash does not match recorded_at and the envelope bytes"
    return f"leaf format {leaf_format} is unknown"


@dataclass(frozen=True)
class ChainRecord:
    """The hash-relevant part of one stored record."""

    seq: int
    envelope: bytes
    leaf_hash: bytes
    prev_hash: bytes
    chain_hash: bytes
    recorded_at: datetime | None = None
    leaf_format: int = LEAF_FORMAT_ENVELOPE

    def expected_leaf(self) -> bytes | None:
        """The leaf its envelope (and, in format 2, its recorded_at) hash to; None when its
        format is unknown or its time missing (then its leaf fails)."""
        try:
            return record_leaf_hash(self.envelope, self.recorded_at, self.leaf_format)
        except ValueError:
            return None


def append(seq: int, envelope: bytes, prev_chain_hash: bytes = GENESIS_HASH, *, recorded_at: datetime | None = None,
           leaf_format: int = LEAF_FORMAT_ENVELOPE) -> ChainRecord:
    """The record that follows a chain whose head hash is `prev_chain_hash`."""
    if seq < 1:
        raise ValueError("seq starts at 1")
    leaf = record_leaf_hash(envelope, recorded_at, leaf_format)
    return ChainRecord(seq=seq, envelope=envelope, leaf_hash=leaf, prev_hash=prev_chain_hash,
                       chain_hash=chain_hash(prev_chain_hash, leaf), recorded_at=recorded_at, leaf_format=leaf_format)


@dataclass(frozen=True)
class ChainFailure:
    """A record at which the stored chain disagrees with the recomputed one (the first, for
    ChainVerifier). `last_seq` is set for records missing: seqs `seq` to `last_seq` are gone."""

    seq: int
    reason: str
    last_seq: int | None = None


class ChainVerifier:
    """Recomputes the chain record by record, so the caller can stream any number of records.

    Feed records in the order they were read (ascending seq). After the first failure the
    verifier stops judging: everything after a broken link is suspect anyway.
    """

    def __init__(self) -> None:
        self.expected_seq = 1
        self.head_hash = GENESIS_HASH
        self.checked = 0
        self.failure: ChainFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def feed(self, rec: ChainRecord) -> ChainFailure | None:
        if self.failure is not None:
            return self.failure
        self.checked += 1
        self.failure = self._judge(rec)
        if self.failure is None:
            self.expected_seq += 1
            self.head_hash = rec.chain_hash
        return self.failure

    def feed_all(self, records: Iterable[ChainRecord]) -> ChainFailure | None:
        for rec in records:
            if self.feed(rec) is not None:
                break
        return self.failure

    def _judge(self, rec: ChainRecord) -> ChainFailure | None:
        want = self.expected_seq
        if rec.seq > want:
            # The record numbered `want` is gone (deleted, or the rows were renumbered).
            return ChainFailure(want, f"record missing: expected seq {want}, found seq {rec.seq}")
        if rec.seq < want:
            return ChainFailure(want, f"out of order: expected seq {want}, found seq {rec.seq}")
        if rec.expected_leaf() != rec.leaf_hash:
            return ChainFailure(want, leaf_differs(rec.leaf_format))
        if rec.prev_hash != self.head_hash:
            return ChainFailure(want, "prev hash does not match the chain hash of the previous record")
        if len(rec.leaf_hash) != HASH_BYTES or chain_hash(rec.prev_hash, rec.leaf_hash) != rec.chain_hash:
            return ChainFailure(want, "chain hash does not match SHA-256(prev hash || leaf hash)")
        return None


class ChainScanner:
    """Judges every record on its own checks and never stops: the extent of a tampering.

    Feed records in ascending seq. Each record is checked locally:
      * seq continuity: a gap is one failure at its first missing seq, `last_seq` its last;
      * its leaf hash is the hash of its envelope bytes;
      * its prev hash is the previous row's *stored* chain hash (or, when that row's chain hash
        failed its own check, the chain hash recomputed for it), so a broken link shows once, at
        the record where it is, and not at every later record. The link of the first record after
        a gap is not judged: its predecessor is missing, and the gap is the failure;
      * its chain hash is SHA-256(its prev hash || its leaf hash).
    A record's failures come in that order, one ChainFailure per failed check (same seq). The first
    failure over a stream is the one ChainVerifier reports (same seq, same reason).
    """

    def __init__(self) -> None:
        self.expected_seq = 1
        #: The previous row's stored chain hash, and the one recomputed for it when they differ.
        self.prev_chain = GENESIS_HASH
        self.prev_recomputed: bytes | None = None
        self.checked = 0

    def feed(self, rec: ChainRecord) -> list[ChainFailure] | None:
        """The record's failures (a gap before it first), or None when it passes every check."""
        self.checked += 1
        want, seq = self.expected_seq, rec.seq
        out: list[ChainFailure] | None = None
        linked = True
        if seq != want:
            if seq < want:  # a seq already passed (a duplicate, or rows out of order): not judged
                return [ChainFailure(want, f"out of order: expected seq {want}, found seq {seq}")]
            out = [ChainFailure(want, f"record missing: expected seq {want}, found seq {seq}", seq - 1)]
            linked = False
        leaf, prev, stored = rec.leaf_hash, rec.prev_hash, rec.chain_hash
        if rec.expected_leaf() != leaf:
            out = out or []
            out.append(ChainFailure(seq, leaf_differs(rec.leaf_format)))
        if linked and prev != self.prev_chain and (self.prev_recomputed is None or prev != self.prev_recomputed):
            out = out or []
            out.append(ChainFailure(seq, "prev hash does not match the chain hash of the previous record"))
        recomputed = chain_hash(prev, leaf) if len(prev) == HASH_BYTES and len(leaf) == HASH_BYTES else None
        if recomputed != stored:
            out = out or []
            out.append(ChainFailure(seq, "chain hash does not match SHA-256(prev hash || leaf hash)"))
            self.prev_recomputed = recomputed
        else:
            self.prev_recomputed = None
        self.prev_chain = stored
        self.expected_seq = seq + 1
        return out


def verify(records: Iterable[ChainRecord]) -> ChainFailure | None:
    """The first failure in a whole chain, or None when it is intact."""
    return ChainVerifier().feed_all(records)
