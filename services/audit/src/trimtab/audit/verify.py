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

The extent (a compliance officer who learns the record was tampered with needs to know which
records): the report's top level is the first failure, as it always was, but the pass does not stop
there. Every record is judged on its own checks (seq continuity, a gap named once as a run of
missing seqs; its leaf against its envelope and against the tree's leaf; its chain hash against its
prev hash and leaf; its prev hash against the previous row's stored chain hash, so one break shows
once; its columns against its envelope), and every failing place is listed, capped (MAX_BAD_SEQS
seqs, MAX_MISMATCHES short reasons, `bad_count` all of them). Signed roots are compared up to the
first failure only; records a trusted checkpoint signed but the log no longer holds at its end are
one run of missing seqs. A checkpoint that fails before any record is read is the report's failure,
and the records are read all the same, for the extent.

The chain is global (every tenant's records in one chain), so verification reads every record but
reports only counts, seqs and which checks failed, never another tenant's content. Records are read in
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
from .domain.chain import ChainRecord, ChainScanner
from .domain.checkpoint import Checkpoint, CheckpointError, trusted_key, verify_checkpoint
from .domain.merkle import Frontier
from .domain.record import mismatched_columns
from .models import records, tree_nodes

BATCH = 500


#: Caps of the extent a report carries (memory stays bounded however much was tampered with).
MAX_BAD_SEQS = 1_000
MAX_MISMATCHES = 100

TREE_LEAF_DIFFERS = "leaf hash differs from the Merkle tree's leaf for this seq"


@dataclass(frozen=True)
class Mismatch:
    """One place where the record fails its own checks: a record (`last_seq` None), or a run of
    missing records, seqs `seq` to `last_seq`. `reason`: every failed check, `; `-separated."""

    seq: int
    reason: str
    last_seq: int | None = None


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    #: Up to and including the record where the first failure was found (0: a checkpoint failed
    #: before any record was read).
    records_checked: int
    first_bad_seq: int | None
    reason: str | None
    #: The extent: every place (a record, or a run of missing records named by its first seq) that
    #: fails its own checks, in seq order, up to the caps; `bad_count` counts them all. A signed
    #: root that differs, or a checkpoint that fails, is in `reason` only.
    bad_seqs: tuple[int, ...] = ()
    bad_count: int = 0
    mismatches: tuple[Mismatch, ...] = ()


class _Extent:
    """The first failure (the report's top level, as before the extent was kept) and every failing
    place, capped."""

    def __init__(self, max_bad_seqs: int, max_mismatches: int) -> None:
        self.max_bad_seqs, self.max_mismatches = max_bad_seqs, max_mismatches
        self.first: tuple[int | None, str, int] | None = None  # (seq, reason, records checked)
        self.bad_seqs: list[int] = []
        self.mismatches: list[Mismatch] = []
        self.count = 0

    def fail(self, seq: int | None, reason: str, checked: int) -> None:
        """A failure of the report that names no place of its own (a checkpoint, a signed root)."""
        if self.first is None:
            self.first = (seq, reason, checked)

    def add(self, seq: int, reasons: list[str], checked: int, last_seq: int | None = None) -> None:
        self.fail(seq, reasons[0], checked)
        self.count += 1
        if len(self.bad_seqs) < self.max_bad_seqs:
            self.bad_seqs.append(seq)
        if len(self.mismatches) < self.max_mismatches:
            self.mismatches.append(Mismatch(seq, "; ".join(reasons), last_seq))

    def report(self, checked: int) -> VerifyReport:
        if self.first is None:
            return VerifyReport(True, checked, None, None)
        seq, reason, at = self.first
        return VerifyReport(False, at, seq, reason, tuple(self.bad_seqs), self.count, tuple(self.mismatches))


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
                        checkpoint_file: Path | None = None, batch_size: int = BATCH,
                        max_bad_seqs: int = MAX_BAD_SEQS, max_mismatches: int = MAX_MISMATCHES) -> VerifyReport:
    """`trusted_keys`: raw Ed25519 public keys whose checkpoints are accepted (the service's own
    and the configured retired or peer keys). The latest checkpoint must name one of them, by the
    key id derived from the key, and its signature must verify with it; otherwise the report
    fails, whatever the records. `checkpoint_file`: the service's checkpoints.jsonl (None: no
    checkpoint directory); when it exists, its last checkpoint is checked the same way, and the
    database's latest checkpoint must not be older than it.

    The report's `ok`, `records_checked`, `first_bad_seq` and `reason` are the first failure's.
    The pass does not stop there: every record is judged on its own checks (ChainScanner, the
    tree's leaf, the columns), and the extent is kept, at most `max_bad_seqs` seqs and
    `max_mismatches` reasons (`bad_count` counts every place). Signed roots are compared only up
    to the first failure (after it, the report has failed already)."""
    keys = tuple(trusted_keys)
    extent = _Extent(max_bad_seqs, max_mismatches)
    # The file first, then the database's checkpoint, then the head: a checkpoint is written to
    # the database before the file and signs records already committed, so in an honest log what
    # is read first is covered by what is read after it, even while records and checkpoints arrive.
    # A checkpoint that fails is the report's failure; the records are still read for the extent.
    witness: Checkpoint | None = None
    if checkpoint_file is not None:
        try:
            witness = checkpoints.read_last(checkpoint_file)
        except (CheckpointError, OSError) as e:
            extent.fail(None, f"the last line of the checkpoint file {checkpoint_file} is not a readable "
                              f"checkpoint: {e}", 0)
    async with sm() as s:
        cp = await checkpoints.latest(s)
        head = await s.scalar(select(func.max(records.c.seq))) or 0
    filed = f"the checkpoint file's latest checkpoint ({checkpoint_file})"
    signed = 0  # the largest size a trusted checkpoint vouches for: records up to it must be there
    for c, what in ((cp, "the latest checkpoint"), (witness, filed)):
        if c is not None:
            if why := _unsigned(c, keys, what):
                extent.fail(None, why, 0)
            else:
                signed = max(signed, c.tree_size)
    if cp is not None and cp.tree_size > head:
        extent.fail(head + 1, f"the latest signed checkpoint covers {cp.tree_size} records, "
                              f"the log holds {head}: records are missing", 0)
    if witness is not None and witness.tree_size > head:
        extent.fail(head + 1, f"{filed} covers {witness.tree_size} records, the log holds "
                              f"{head}: records are missing", 0)
    # Checkpoint rows deleted: the database's latest is older than what the file says was signed.
    stale = None
    if witness is not None and (cp is None or cp.tree_size < witness.tree_size):
        stale = (f"the database's latest checkpoint ({'none' if cp is None else f'size {cp.tree_size}'}) is "
                 f"older than {filed}, size {witness.tree_size}: checkpoint rows were deleted")
    # (size, signed root, failure) for each checkpoint, in the order the stream reaches them.
    # The file's latest is usually the database's latest too: then it is checked once, as that.
    roots: list[tuple[int, bytes, str]] = []
    if extent.first is None:
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
    scanner = ChainScanner()
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
            extent.add(after + 1, [f"record missing: expected seq {after + 1}"], scanner.checked, head)
            break
        for row in rows:
            envelope, leaf = bytes(row.envelope), bytes(row.leaf_hash)
            failures = scanner.feed(ChainRecord(
                seq=row.seq, envelope=envelope, leaf_hash=leaf,
                prev_hash=bytes(row.prev_hash), chain_hash=bytes(row.chain_hash),
                recorded_at=row.recorded_at, leaf_format=row.leaf_format))
            tree_leaf = leaves.get(row.seq - 1)
            # The hashes cover the envelope (and, in leaf format 2, recorded_at) only; the indexed
            # columns must agree with the envelope, or a
            # record could be moved to another tenant or proposal without breaking the chain.
            wrong = mismatched_columns(row._mapping, envelope)
            if failures is None and tree_leaf is not None and bytes(tree_leaf) == leaf and not wrong:
                if frontier is not None and extent.first is None and frontier.size < upto:
                    frontier.extend([leaf])
                    while next_root < len(roots) and frontier.size == roots[next_root][0]:
                        if frontier.root() != roots[next_root][1]:
                            extent.fail(row.seq, roots[next_root][2], scanner.checked)
                            break
                        next_root += 1
                continue
            own: list[str] = []
            for f in failures or ():
                if f.seq == row.seq:
                    own.append(f.reason)
                else:  # records missing before this one (or this one out of order): a place of its own
                    extent.add(f.seq, [f.reason], scanner.checked, f.last_seq)
            if tree_leaf is None or bytes(tree_leaf) != leaf:
                own.append(TREE_LEAF_DIFFERS)
            if wrong:
                own.append(f"columns disagree with the envelope: {', '.join(wrong)}")
            if own:
                extent.add(row.seq, own, scanner.checked)
        after = rows[-1].seq
    if signed > head:  # signed records cut from the log's end (the report's failure already)
        extent.add(head + 1, [f"records missing: seqs {head + 1} to {signed} are signed but not in the log"],
                   scanner.checked, signed)
    if stale is not None:
        extent.fail(None, stale, scanner.checked)
    return extent.report(scanner.checked)
