"""Verification of the whole record: recompute the chain from seq 1, streaming in batches, and
check every record's leaf against the Merkle tree's stored leaf (tree_nodes level 0).

The chain is global (every tenant's records in one chain), so verification reads every record but
reports only counts and the first bad seq, never another tenant's content. Records are read in
keyset batches up to the head seen at the start; because appends are serialized (insert order =
commit order), every seq up to that head is already committed, so the run has a fixed extent
even while new records keep arriving.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .domain.chain import ChainRecord, ChainVerifier
from .domain.record import mismatched_columns
from .models import records, tree_nodes

BATCH = 500


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records_checked: int
    first_bad_seq: int | None
    reason: str | None


async def verify_record(sm: async_sessionmaker[AsyncSession], *, batch_size: int = BATCH) -> VerifyReport:
    verifier = ChainVerifier()
    async with sm() as s:
        head = await s.scalar(select(func.max(records.c.seq))) or 0
    after = 0
    while after < head:
        async with sm() as s:
            rows = (await s.execute(
                select(records).where(records.c.seq > after, records.c.seq <= head)
                .order_by(records.c.seq).limit(batch_size))).all()
            # The Merkle leaves written when each record arrived: a leaf hash rewritten in
            # `records` together with its chain no longer matches the tree's own copy.
            leaves = dict((await s.execute(select(tree_nodes.c.idx, tree_nodes.c.hash).where(
                tree_nodes.c.level == 0, tree_nodes.c.idx >= rows[0].seq - 1,
                tree_nodes.c.idx <= rows[-1].seq - 1))).all()) if rows else {}
        if not rows:  # rows up to the head vanished after it was read
            return VerifyReport(False, verifier.checked, after + 1, f"record missing: expected seq {after + 1}")
        for row in rows:
            envelope = bytes(row.envelope)
            failure = verifier.feed(ChainRecord(
                seq=row.seq, envelope=envelope, leaf_hash=bytes(row.leaf_hash),
                prev_hash=bytes(row.prev_hash), chain_hash=bytes(row.chain_hash)))
            if failure is not None:
                return VerifyReport(False, verifier.checked, failure.seq, failure.reason)
            # The hashes cover the envelope only; the indexed columns must agree with it, or a
            # record could be moved to another tenant or proposal without breaking the chain.
            tree_leaf = leaves.get(row.seq - 1)
            if tree_leaf is None or bytes(tree_leaf) != bytes(row.leaf_hash):
                return VerifyReport(False, verifier.checked, row.seq,
                                    "leaf hash differs from the Merkle tree's leaf for this seq")
            wrong = mismatched_columns(row._mapping, envelope)
            if wrong:
                return VerifyReport(False, verifier.checked, row.seq,
                                    f"columns disagree with the envelope: {', '.join(wrong)}")
        after = rows[-1].seq
    return VerifyReport(True, verifier.checked, None, None)
