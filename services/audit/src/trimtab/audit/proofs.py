"""Records with their inclusion proofs: which tree size to prove against, and the response shapes.

By default a record is proved against the latest signed checkpoint, so a client checks the proof
against a root it can verify the signature of; a record newer than that checkpoint has no proof
yet (the next checkpoint covers it). `tree_size` asks for any committed size instead.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.errors import Invalid

from . import checkpoints, queries, tree
from .domain.checkpoint import Checkpoint
from .schemas import CheckpointOut, InclusionProofOut, RecordProvedOut


def checkpoint_out(cp: Checkpoint | None) -> CheckpointOut | None:
    if cp is None:
        return None
    d = cp.to_json()
    return CheckpointOut(**d)


async def target(s: AsyncSession, tree_size: int | None) -> tuple[int, bytes, Checkpoint | None] | None:
    """(size, root, checkpoint) to prove against: the latest checkpoint, or the size asked for."""
    if tree_size is None:
        cp = await checkpoints.latest(s)
        return (cp.tree_size, cp.root_hash, cp) if cp else None
    current = await tree.size(s)
    if tree_size > current:
        raise Invalid(f"tree_size {tree_size} is larger than the log ({current} records)")
    cp = await checkpoints.at_size(s, tree_size)
    return tree_size, (cp.root_hash if cp else await tree.root_at(s, tree_size)), cp


async def prove(s: AsyncSession, rows: Sequence[Any], tree_size: int | None) -> tuple[list[RecordProvedOut], Checkpoint | None]:
    tgt = await target(s, tree_size)
    if tgt is None:
        return [RecordProvedOut(**queries.to_detail(r).model_dump(), proof=None,
                                proof_note="no checkpoint has been signed yet") for r in rows], None
    size, root, cp = tgt
    covered = [r.seq - 1 for r in rows if r.seq <= size]
    paths = await tree.inclusion_proofs(s, covered, size) if covered else {}
    cp_o = checkpoint_out(cp)
    out = []
    for r in rows:
        detail = queries.to_detail(r).model_dump()
        if r.seq > size:
            out.append(RecordProvedOut(**detail, proof=None, proof_note=(
                f"record is newer than the tree of size {size}; the next checkpoint covers it")))
            continue
        out.append(RecordProvedOut(**detail, proof=InclusionProofOut(
            leaf_index=r.seq - 1, tree_size=size, root_hash=root.hex(),
            inclusion_path=[h.hex() for h in paths[r.seq - 1]], checkpoint=cp_o)))
    return out, cp


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
