"""Verification of the whole record: recompute the chain from seq 1, streaming in batches, and
check every record's leaf against the Merkle tree's stored leaf (tree_nodes level 0). Then
against the latest signed checkpoint (eighth session; before, deleting the last checkpointed
records or flipping a checkpoint's signature passed): its signature verifies with one of the
trusted keys (the service's own and AUDIT_TRUSTED_PUBLIC_KEYS), the log holds at least its size,
and the root of the log's first `tree_size` leaves is the signed root.

Then against the checkpoint file's last line (AUDIT_CHECKPOINT_DIR/checkpoints.jsonl, the copy
outside the database): the same three checks, and the database's latest checkpoint must be at
least as large. A review found the database alone cannot witness against its owner: rewriting the
records after seq N (chain and tree_nodes included) and deleting the checkpoint rows above N (or
all of them) passed. Both signed roots are checked in the one streaming pass (one frontier, the
roots compared as it reaches each size). Without a checkpoint directory there is no file and only
the database's checkpoint is checked, as before.

A checkpoint whose `key_id` names no trusted key fails. Before (a review found it), one naming another
key than the service's was checked for size and root only, so whoever could rewrite the records,
the tree and the checkpoint could also rewrite its `key_id` past the signature check.

The chain is global (every tenant's records in one chain), so verification reads every record but
reports only counts and the first bad seq, never another tenant's content. Records are read in
keyset batches up to the head seen at the start; because appends are serialized (insert order =
commit order), every seq up to that head is already committed, so the run has a fixed extent
even while new records keep arriving.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import checkpoints
from .domain.chain import ChainRecord, ChainVerifier
from .domain.checkpoint import Checkpoint, CheckpointError, trusted_key, verify_checkpoint
from .domain.merkle import Frontier
from .domain.record import mismatched_columns
from .models import records, tree_nodes

BATCH = 500


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records_checked: int
    first_bad_seq: int | None
    reason: str | None


def _unsigned(cp: Checkpoint, keys: tuple[bytes, ...], what: str) -> str | None:
    """Why `cp` is not signed by one of `keys`, or None when it is."""
    key = trusted_key(cp, keys)
    if key is None:
        return (f"{what} (size {cp.tree_size}) names signing key {cp.key_id[:16]}…, which is not a trusted key "
                "(the service's own or one in AUDIT_TRUSTED_PUBLIC_KEYS): its signature cannot be checked")
    try:
        verify_checkpoint(cp, key)
    except CheckpointError as e:
        return f"{what} (size {cp.tree_size}) does not verify: {e}"
    return None


async def verify_record(sm: async_sessionmaker[AsyncSession], *, trusted_keys: Iterable[bytes],
                        checkpoint_file: Path | None = None, batch_size: int = BATCH) -> VerifyReport:
    """`trusted_keys`: raw Ed25519 public keys whose checkpoints are accepted (the service's own
    and the configured retired or peer keys). The latest checkpoint must name one of them, by the
    key id derived from the key, and its signature must verify with it; otherwise the report
    fails, whatever the records. `checkpoint_file`: the service's checkpoints.jsonl (None: no
    checkpoint directory); when it exists, its last checkpoint is checked the same way, and the
    database's latest checkpoint must not be older than it."""
    keys = tuple(trusted_keys)
    verifier = ChainVerifier()
    # The file first, then the database's checkpoint, then the head: a checkpoint is written to
    # the database before the file and signs records already committed, so in an honest log what
    # is read first is covered by what is read after it, even while records and checkpoints arrive.
    witness: Checkpoint | None = None
    if checkpoint_file is not None:
        try:
            witness = checkpoints.read_last(checkpoint_file)
        except (CheckpointError, OSError) as e:
            return VerifyReport(False, 0, None, f"the last line of the checkpoint file {checkpoint_file} is not a "
                                                f"readable checkpoint: {e}")
    async with sm() as s:
        cp = await checkpoints.latest(s)
        head = await s.scalar(select(func.max(records.c.seq))) or 0
    if cp is not None and (why := _unsigned(cp, keys, "the latest checkpoint")):
        return VerifyReport(False, 0, None, why)
    filed = f"the checkpoint file's latest checkpoint ({checkpoint_file})"
    if witness is not None and (why := _unsigned(witness, keys, filed)):
        return VerifyReport(False, 0, None, why)
    if cp is not None and cp.tree_size > head:
        return VerifyReport(False, 0, head + 1, f"the latest signed checkpoint covers {cp.tree_size} records, "
                                                f"the log holds {head}: records are missing")
    if witness is not None and witness.tree_size > head:
        return VerifyReport(False, 0, head + 1, f"{filed} covers {witness.tree_size} records, the log holds "
                                                f"{head}: records are missing")
    # Checkpoint rows deleted: the database's latest is older than what the file says was signed.
    stale = None
    if witness is not None and (cp is None or cp.tree_size < witness.tree_size):
        stale = (f"the database's latest checkpoint ({'none' if cp is None else f'size {cp.tree_size}'}) is "
                 f"older than {filed}, size {witness.tree_size}: checkpoint rows were deleted")
    # (size, signed root, failure) for each checkpoint, in the order the stream reaches them.
    # The file's latest is usually the database's latest too: then it is checked once, as that.
    roots: list[tuple[int, bytes, str]] = []
    if witness is not None and witness.tree_size > 0 and (
            cp is None or (cp.tree_size, cp.root_hash) != (witness.tree_size, witness.root_hash)):
        roots.append((witness.tree_size, witness.root_hash,
                      f"the root of the first {witness.tree_size} records is not the signed root of {filed}: "
                      f"records it covers were rewritten{'; and ' + stale if stale else ''}"))
    if cp is not None and cp.tree_size > 0:
        roots.append((cp.tree_size, cp.root_hash, f"the root of the first {cp.tree_size} records is not the "
                                                  "latest checkpoint's signed root"))
    roots.sort(key=lambda r: r[0])  # stable: the file's first at an equal size (two roots: a fork)
    frontier = Frontier() if roots else None
    upto = roots[-1][0] if roots else 0
    next_root = 0  # the index in `roots` of the next size to reach
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
            if frontier is not None and frontier.size < upto:
                frontier.extend([bytes(row.leaf_hash)])
                while next_root < len(roots) and frontier.size == roots[next_root][0]:
                    if frontier.root() != roots[next_root][1]:
                        return VerifyReport(False, verifier.checked, row.seq, roots[next_root][2])
                    next_root += 1
        after = rows[-1].seq
    if stale is not None:
        return VerifyReport(False, verifier.checked, None, stale)
    return VerifyReport(True, verifier.checked, None, None)
