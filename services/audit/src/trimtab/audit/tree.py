"""The Merkle tree in the database: nodes written as leaves arrive, tree heads and proofs read back.

Leaf index i is record seq i + 1. Every node, the leaves (level 0) included, is read from
`tree_nodes`, never from `records`: the proofs come from the table that was written when the
record arrived, and `records.leaf_hash` is what gets checked against them.

Appends are serialized by the records table lock (handlers.py), so the left siblings a new leaf
needs are committed before it, and every node inside a committed tree size is final: a tree head or
proof for size n read in any later transaction sees the same bytes.

All of a proof's nodes are fetched in one round trip (`_fetch`), O(log n) index lookups.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from .domain import merkle
from .domain.merkle import NodeId
from .models import SCHEMA, records
from .pgcopy import copy_rows

_FETCH = text(f"""
SELECT n.level, n.idx, n.hash FROM "{SCHEMA}".tree_nodes n
  JOIN unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) AS w(level, idx)
    ON n.level = w.level AND n.idx = w.idx
""")


class MissingNode(RuntimeError):
    """A node the tree should have is not stored: the record or its nodes were removed."""


async def _fetch(s: AsyncSession, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
    ids = list(ids)
    if not ids:
        return {}
    rows = (await s.execute(_FETCH, {"levels": [lv for lv, _ in ids], "idxs": [i for _, i in ids]})).all()
    got = {(r.level, r.idx): bytes(r.hash) for r in rows}
    missing = [n for n in ids if n not in got]
    if missing:
        raise MissingNode(f"tree nodes missing from the store: {missing[:5]}")
    return got


async def append_leaves(s: AsyncSession, first_index: int, leaves: list[bytes]) -> int:
    """Store leaves first_index, first_index + 1, ... and every node they complete (the caller
    holds the append lock and has begun the transaction); how many nodes. The left siblings any
    new leaf can need are on the tree's right edge (`decompose(0, size)`, at most 64 nodes): read
    once per run, kept up to date in memory while the run's leaves are added, and everything
    written with one COPY."""
    frontier = merkle.Frontier(first_index, await _fetch(s, merkle.decompose(0, first_index)))
    rows: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        rows.extend(frontier.append(leaf))
    await copy_rows(s, "tree_nodes", ("level", "idx", "hash"), rows)
    return len(rows)


async def size(s: AsyncSession) -> int:
    """The committed tree size: the head seq (seqs are gap-free from 1)."""
    return int(await s.scalar(select(func.coalesce(func.max(records.c.seq), 0))) or 0)


async def root_at(s: AsyncSession, tree_size: int) -> bytes:
    nodes = merkle.decompose(0, tree_size)
    got = await _fetch(s, nodes)
    return merkle.combine([got[n] for n in nodes])


async def _ranges(s: AsyncSession, ranges: list[merkle.Range]) -> list[bytes]:
    got = await _fetch(s, merkle.nodes_for(ranges))
    return merkle.hashes_for(ranges, got)


async def inclusion_proof(s: AsyncSession, index: int, tree_size: int) -> list[bytes]:
    return await _ranges(s, merkle.inclusion_ranges(index, tree_size))


async def consistency_proof(s: AsyncSession, first: int, second: int) -> list[bytes]:
    return await _ranges(s, merkle.consistency_ranges(first, second))


async def leaf_hashes(s: AsyncSession, start: int, end: int) -> list[tuple[int, bytes]]:
    """(leaf index, leaf hash) for indexes [start, end) that have a record, in index order."""
    rows = (await s.execute(select(records.c.seq, records.c.leaf_hash).where(
        records.c.seq > start, records.c.seq <= end).order_by(records.c.seq))).all()
    return [(r.seq - 1, bytes(r.leaf_hash)) for r in rows]


async def inclusion_proofs(s: AsyncSession, indexes: Iterable[int], tree_size: int) -> dict[int, list[bytes]]:
    """Proofs of many leaves against one tree size with one round trip (exports, lineage)."""
    wanted = {i: merkle.inclusion_ranges(i, tree_size) for i in indexes}
    got = await _fetch(s, merkle.nodes_for(r for ranges in wanted.values() for r in ranges))
    return {i: merkle.hashes_for(ranges, got) for i, ranges in wanted.items()}
