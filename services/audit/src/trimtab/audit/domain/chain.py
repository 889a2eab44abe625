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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

HASH_BYTES = 32
GENESIS_HASH = b"\x00" * HASH_BYTES
LEAF_PREFIX = b"\x00"


def leaf_hash(envelope: bytes) -> bytes:
    """RFC 6962 leaf hash of one record's canonical envelope bytes."""
    return hashlib.sha256(LEAF_PREFIX + envelope).digest()


def chain_hash(prev_chain_hash: bytes, leaf: bytes) -> bytes:
    """The chain hash of a record, binding it to everything before it."""
    if len(prev_chain_hash) != HASH_BYTES or len(leaf) != HASH_BYTES:
        raise ValueError("chain hashes and leaf hashes are 32 bytes")
    return hashlib.sha256(prev_chain_hash + leaf).digest()


@dataclass(frozen=True)
class ChainRecord:
    """The hash-relevant part of one stored record."""

    seq: int
    envelope: bytes
    leaf_hash: bytes
    prev_hash: bytes
    chain_hash: bytes


def append(seq: int, envelope: bytes, prev_chain_hash: bytes = GENESIS_HASH) -> ChainRecord:
    """The record that follows a chain whose head hash is `prev_chain_hash`."""
    if seq < 1:
        raise ValueError("seq starts at 1")
    leaf = leaf_hash(envelope)
    return ChainRecord(seq=seq, envelope=envelope, leaf_hash=leaf, prev_hash=prev_chain_hash,
                       chain_hash=chain_hash(prev_chain_hash, leaf))


@dataclass(frozen=True)
class ChainFailure:
    """The first record at which the stored chain disagrees with the recomputed one."""

    seq: int
    reason: str


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
        if leaf_hash(rec.envelope) != rec.leaf_hash:
            return ChainFailure(want, "leaf hash does not match the envelope bytes")
        if rec.prev_hash != self.head_hash:
            return ChainFailure(want, "prev hash does not match the chain hash of the previous record")
        if len(rec.leaf_hash) != HASH_BYTES or chain_hash(rec.prev_hash, rec.leaf_hash) != rec.chain_hash:
            return ChainFailure(want, "chain hash does not match SHA-256(prev hash || leaf hash)")
        return None


def verify(records: Iterable[ChainRecord]) -> ChainFailure | None:
    """The first failure in a whole chain, or None when it is intact."""
    return ChainVerifier().feed_all(records)
