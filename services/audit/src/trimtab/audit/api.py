"""Thin HTTP routes of audit (`/v1/audit`): records with inclusion proofs, chains of one tick,
proposal trails and decision lineage, checkpoints, consistency proofs, leaf hashes, exports, verify.

Records and their content are per tenant. Tree heads, consistency proofs and leaf hashes are
global and reveal no content (a leaf hash is SHA-256 over an envelope that holds random ids), so
any reader can check the whole log's shape while seeing only their own records.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import AfterValidator, BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trimtab.shared.auth import Principal, requires
from trimtab.shared.envelope import utcnow
from trimtab.shared.errors import Busy, Conflict, Invalid, NotFound

from . import bulk, checkpoints, export, proofs, queries, tree
from .domain import checkpoint as ckpt
from .domain import frames
from .schemas import (
    CheckpointOut,
    ConsistencyOut,
    DecisionLineageOut,
    LatestCheckpointOut,
    LeavesOut,
    MismatchOut,
    RecordPage,
    RecordProvedOut,
    RecordTrail,
    VerifyOut,
)
from .verify import verify_record

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Reader = Annotated[Principal, Depends(requires("audit:read"))]
Admin = Annotated[Principal, Depends(requires("audit:write"))]
MAX_SEQ = 2**63 - 1  # the bigint column's range; larger numbers are a 422, not a 500
AfterSeq = Annotated[int, Query(ge=0, le=MAX_SEQ, description="only records with a greater seq")]
PageLimit = Annotated[int, Query(ge=1, le=1000)]


def _instant(v: datetime | None) -> datetime | None:
    """A time filter: without an offset it is UTC; its UTC time must exist (years 1 to 9999).

    "9999-12-31T23:59:59-14:00" parses but is in year 10000 in UTC: a 422 here, not an
    OverflowError when the driver converts it."""
    if v is None:
        return None
    if v.tzinfo is None or v.utcoffset() is None:
        v = v.replace(tzinfo=UTC)
    try:
        v.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC it must fall in years 1 to 9999") from None
    return v


def _not_a_number(value: object) -> object:
    """A date-time is ISO 8601: lax mode read `until=0` as a Unix time (found by `make fuzz`)."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?[\d.eE+-]+\s*", value)):
        raise ValueError("a date-time is ISO 8601 (2024-01-02T21:00:00Z), not a number")
    return value


#: A date-time query parameter (ISO 8601; UTC when it has no offset), bounded as `_instant` says.
Instant = AfterValidator(_instant)
IsoOnly = BeforeValidator(_not_a_number)


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sm: async_sessionmaker[AsyncSession] | None = request.app.state.runtime.sessionmaker
    assert sm is not None, "runtime not started"
    return sm


@router.get("/records", response_model=RecordPage, summary="The tenant's records, by seq (paged)")
async def list_records(
    principal: Reader, request: Request, correlation_id: uuid.UUID | None = None,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    after_seq: AfterSeq = 0, limit: PageLimit = 100,
) -> RecordPage:
    async with _sessions(request)() as s:
        rows, nxt = await queries.list_records(s, principal.tenant_id, correlation_id=correlation_id,
                                               event_type=event_type, after_seq=after_seq, limit=limit)
    return RecordPage(items=[queries.to_out(r) for r in rows], next_after_seq=nxt)


@router.get("/records/{seq}", response_model=RecordProvedOut,
            summary="One record with its envelope, hashes and inclusion proof (latest checkpoint, or tree_size)")
async def get_record(
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], principal: Reader, request: Request,
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="prove against this size")] = None,
) -> RecordProvedOut:
    if tree_size is not None and tree_size < seq:
        raise Invalid(f"record {seq} is not in a tree of {tree_size} leaves")
    async with _sessions(request)() as s:
        row = await queries.get_record(s, principal.tenant_id, seq)
        if row is None:
            raise NotFound(f"audit record {seq} not found")
        [out], _ = await proofs.prove(s, [row], tree_size)
    return out


@router.get("/chains/{correlation_id}", response_model=RecordTrail,
            summary="Every record of one correlation id (one tick's whole chain), by seq")
async def get_chain(
    correlation_id: uuid.UUID, principal: Reader, request: Request,
    after_seq: AfterSeq = 0, limit: PageLimit = 500,
) -> RecordTrail:
    async with _sessions(request)() as s:
        rows, nxt = await queries.trail(s, principal.tenant_id, correlation_id=correlation_id,
                                        after_seq=after_seq, limit=limit)
    if not rows and after_seq == 0:
        raise NotFound(f"no audit records for correlation id {correlation_id}")
    return RecordTrail(records=[queries.to_detail(r) for r in rows], next_after_seq=nxt)


@router.get("/proposals/{proposal_id}", response_model=RecordTrail,
            summary="Every record whose payload names this proposal, by seq")
async def get_proposal_trail(
    proposal_id: uuid.UUID, principal: Reader, request: Request,
    after_seq: AfterSeq = 0, limit: PageLimit = 500,
) -> RecordTrail:
    async with _sessions(request)() as s:
        rows, nxt = await queries.trail(s, principal.tenant_id, proposal_id=proposal_id,
                                        after_seq=after_seq, limit=limit)
    if not rows and after_seq == 0:
        raise NotFound(f"no audit records for proposal {proposal_id}")
    return RecordTrail(records=[queries.to_detail(r) for r in rows], next_after_seq=nxt)


def _verify_lock(request: Request) -> asyncio.Lock:
    lock = getattr(request.app.state, "verify_lock", None)
    if lock is None:
        lock = request.app.state.verify_lock = asyncio.Lock()
    return lock


@router.post("/verify", response_model=VerifyOut,
             summary="Recompute the whole hash chain; report the first bad seq and every bad place")
async def verify(principal: Reader, request: Request) -> VerifyOut:
    # It re-reads the whole log (every tenant's records): one run at a time per instance, so
    # that repeated calls cannot pile full scans onto the database.
    lock = _verify_lock(request)
    if lock.locked():
        raise Busy("a verification of the record is already running on this instance: try again "
                    "when it ends (the offline verifier checks the record without loading the service)")
    async with lock:
        rep = await verify_record(_sessions(request), trusted_keys=request.app.state.trusted_keys,
                                  checkpoint_file=request.app.state.checkpointer.path)
    return VerifyOut(ok=rep.ok, records_checked=rep.records_checked, first_bad_seq=rep.first_bad_seq,
                     reason=rep.reason, bad_seqs=list(rep.bad_seqs), bad_count=rep.bad_count,
                     mismatches=[MismatchOut(seq=m.seq, last_seq=m.last_seq, reason=m.reason)
                                 for m in rep.mismatches],
                     verified_at=utcnow())


# ------------------------------------------------------------------ the tree: heads and proofs


def _signing_key(request: Request, cp: ckpt.Checkpoint | None) -> bytes:
    """The trusted public key that signed `cp` (the service's own, or a retired or peer key of
    AUDIT_TRUSTED_PUBLIC_KEYS); the service's own when `cp` names none of them, so that a verifier
    checking `cp` with it fails rather than being handed a key on the checkpoint's word."""
    own: bytes = request.app.state.checkpointer.signer.public_key
    return (ckpt.trusted_key(cp, request.app.state.trusted_keys) if cp else None) or own


@router.get("/checkpoints/latest", response_model=LatestCheckpointOut,
            summary="The latest signed tree head, with the public key that signed it")
async def latest_checkpoint(principal: Reader, request: Request) -> LatestCheckpointOut:
    async with _sessions(request)() as s:
        cp = await checkpoints.latest(s)
    if cp is None:
        raise NotFound("no checkpoint has been signed yet")
    return LatestCheckpointOut(**cp.to_json(), public_key=proofs.b64(_signing_key(request, cp)),
                               signed_message=cp.message().decode())


@router.post("/checkpoints", response_model=CheckpointOut, status_code=201,
             summary="Sign a checkpoint of the current tree head now")
async def sign_checkpoint(principal: Admin, request: Request) -> CheckpointOut:
    # 409 (CheckpointRefused) when the head does not extend the previous checkpoint (the checkpoint
    # file's latest or the database's): the signer does not vouch for rewritten records.
    cp = await request.app.state.checkpointer.sign()
    return CheckpointOut(**cp.to_json())


@router.get("/consistency", response_model=ConsistencyOut,
            summary="RFC 9162 consistency proof between two tree sizes")
async def consistency(
    principal: Reader, request: Request,
    from_size: Annotated[int, Query(alias="from", ge=0, le=MAX_SEQ)],
    to_size: Annotated[int, Query(alias="to", ge=0, le=MAX_SEQ)],
) -> ConsistencyOut:
    if from_size > to_size:
        raise Invalid(f"from ({from_size}) is larger than to ({to_size})")
    async with _sessions(request)() as s:
        current = await _answered_size(s)
        if to_size > current:
            raise Invalid(f"to ({to_size}) is larger than the log ({current} records)")
        try:  # from the stored nodes, which a signed tree keeps even when its records are cut
            path = await tree.consistency_proof(s, from_size, to_size)
            r1, r2 = await tree.root_at(s, from_size), await tree.root_at(s, to_size)
        except tree.MissingNode as e:
            raise Conflict(f"cannot prove sizes {from_size} to {to_size}: {e}") from e
    return ConsistencyOut(from_size=from_size, to_size=to_size, from_root=r1.hex(), to_root=r2.hex(),
                          consistency_path=[h.hex() for h in path])


async def _answered_size(s: AsyncSession) -> int:
    """The tree size the service answers for: its head, or the latest signed checkpoint's size if
    that is larger. A signed size is never out of range: records it covered that were cut from the
    log's end are answered as missing (and proofs come from the stored nodes), so a verifier names
    them instead of being told it asked for too much."""
    head = await tree.size(s)
    cp = await checkpoints.latest(s)
    return max(head, cp.tree_size if cp is not None else 0)


MAX_LEAVES = 100_000


@router.get("/leaves", response_model=LeavesOut,
            summary="Leaf hashes of a range of leaf indexes (all tenants; hashes only)")
async def leaves(
    principal: Reader, request: Request,
    start: Annotated[int, Query(ge=0, le=MAX_SEQ)],
    end: Annotated[int, Query(ge=1, le=MAX_SEQ)],
) -> LeavesOut:
    if not start < end <= start + MAX_LEAVES:
        raise Invalid(f"ask for 1 to {MAX_LEAVES} leaves with start < end")
    async with _sessions(request)() as s:
        end = min(end, await _answered_size(s))
        got = dict(await tree.leaf_hashes(s, start, end)) if end > start else {}
    missing = [i + 1 for i in range(start, end) if i not in got]
    blob = b"".join(got.get(i, b"\x00" * 32) for i in range(start, end))
    return LeavesOut(start=start, end=max(start, end), leaf_hashes=proofs.b64(blob), missing_seqs=missing)


MAX_LEAVES_BIN = 1_000_000
MAX_RECORDS_BIN = 50_000
_OCTETS = "application/octet-stream"


@router.get("/leaves.bin", response_class=Response, responses={200: {"content": {_OCTETS: {}}}},
            summary="Leaf hashes of [start, end) as binary (seq u64, hash) entries (all tenants)")
async def leaves_bin(
    principal: Reader, request: Request,
    start: Annotated[int, Query(ge=0, le=MAX_SEQ)],
    end: Annotated[int, Query(ge=1, le=MAX_SEQ)],
) -> Response:
    # The verifier's bulk read (domain/frames.py): 40 bytes per leaf instead of base64 in JSON.
    # A missing record is an absent entry, named by its seq in the gap.
    if not start < end <= start + MAX_LEAVES_BIN:
        raise Invalid(f"ask for 1 to {MAX_LEAVES_BIN} leaves with start < end")
    async with _sessions(request)() as s:
        end = min(end, await _answered_size(s))
        body = await bulk.leaves(s, start, end) if end > start else b""
    return Response(body, media_type=_OCTETS, headers={"X-Start": str(start), "X-End": str(max(start, end))})


@router.get("/records.bin", response_class=Response, responses={200: {"content": {_OCTETS: {}}}},
            summary="The tenant's records as binary frames: seq, ids, type, tenant, leaf format, recorded_at, "
                    "envelope bytes")
async def records_bin(
    principal: Reader, request: Request, after_seq: AfterSeq = 0,
    max_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = MAX_SEQ,
    limit: Annotated[int, Query(ge=1, le=MAX_RECORDS_BIN)] = 10_000,
    frame_format: Annotated[int, Query(ge=1, le=frames.RECORDS_FORMAT, description=(
        "1: the frames of the first releases (no leaf format, no recorded_at; refused with 409 for a "
        "page holding records of leaf format 2); 2: with both (domain/frames.py)"))] = 1,
) -> Response:
    # Format 1 by default: a verifier of an earlier release asks for nothing and reads format 1;
    # given format 2 it would misread every frame (review), so it gets a clear refusal instead
    # once the log holds records only format 2 carries.
    async with _sessions(request)() as s:
        try:
            body, n, last = await bulk.records(s, principal.tenant_id, after_seq, max_seq, limit, frame_format)
        except bulk.FrameFormatTooOld:
            raise Conflict(
                "these records include some of leaf format 2 (their recorded_at is inside the leaf hash), which "
                "record frames of format 1 cannot carry: ask with frame_format=2 (the offline verifier of this "
                "release does)", frame_format=frame_format) from None
    return Response(body, media_type=_OCTETS, headers={
        "X-Records": str(n), "X-Next-After-Seq": str(last) if n == limit and last is not None else "",
        "X-Frame-Format": str(frame_format)})


# ------------------------------------------------------------------ lineage and export


@router.get("/decisions/{proposal_id}", response_model=DecisionLineageOut,
            summary="A proposal's whole chain (tick ... executions), each record with its proof")
async def decision_lineage(
    proposal_id: uuid.UUID, principal: Reader, request: Request,
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> DecisionLineageOut:
    async with _sessions(request)() as s:
        rows, truncated = await queries.lineage(s, principal.tenant_id, proposal_id, limit=2000)
        if not rows:
            raise NotFound(f"no audit records for proposal {proposal_id}")
        out, cp = await proofs.prove(s, rows, tree_size)
    return DecisionLineageOut(proposal_id=proposal_id, checkpoint=proofs.checkpoint_out(cp),
                              records=out, truncated=truncated)


_PDF = "application/pdf"


@router.get("/export", response_model=None,
            summary="JSON Lines (with proofs), or an HTML or PDF report, of the tenant's records",
            responses={200: {"content": {"application/x-ndjson": {}, "text/html": {}, _PDF: {}}}})
async def export_records(
    principal: Reader, request: Request,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    household_id: Annotated[str | None, Query(max_length=64, description=(
        "records naming the household, and every record of its accounts"))] = None,
    proposal_id: uuid.UUID | None = None,
    since: Annotated[datetime | None, Query(description="occurred_at >= since (UTC without an offset)"),
                     IsoOnly, Instant] = None,
    until: Annotated[datetime | None, Query(description="occurred_at < until (UTC without an offset)"),
                     IsoOnly, Instant] = None,
    after_seq: AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 1000,
    proofs_: Annotated[bool, Query(alias="proofs")] = True,
    fmt: Annotated[str, Query(alias="format", pattern="^(jsonl|html|pdf)$")] = "jsonl",
) -> StreamingResponse | HTMLResponse | Response:
    async with _sessions(request)() as s:
        tgt = await proofs.target(s, None) if proofs_ else None
        rows, nxt = await queries.export(
            s, principal.tenant_id, account_id=account_id, household_id=household_id,
            proposal_id=proposal_id, since=since, until=until, after_seq=after_seq, max_seq=None, limit=limit)
        paths = {}
        if tgt is not None:
            covered = [r.seq - 1 for r in rows if r.seq <= tgt[0]]
            paths = await tree.inclusion_proofs(s, covered, tgt[0]) if covered else {}
    cp = tgt[2] if tgt else None
    if fmt == "jsonl":
        return StreamingResponse(export.jsonl(rows, cp, paths, nxt,
                                              ckpt.trusted_key(cp, request.app.state.trusted_keys) if cp else None),
                                 media_type="application/x-ndjson")
    key = _signing_key(request, cp)
    filters = {"account_id": account_id, "household_id": household_id, "proposal_id": proposal_id,
               "since": since, "until": until, "after_seq": after_seq or None}
    if fmt == "html":
        return HTMLResponse(export.html_report(rows, cp, paths, key, principal.tenant_id,
                                               filters=filters, next_after_seq=nxt))
    # Seconds of CPU for a large page: off the event loop, which also runs the consumer.
    body = await asyncio.to_thread(export.pdf_report, rows, cp, paths, key,
                                   principal.tenant_id, filters, nxt)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"trimtab-audit-{principal.tenant_id}")
    return Response(body, media_type=_PDF, headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})


@router.get("/public-key", summary="The checkpoint signing public key (base64, raw Ed25519)")
async def public_key(principal: Reader, request: Request) -> dict[str, str]:
    signer = request.app.state.checkpointer.signer
    return {"algorithm": "Ed25519", "public_key": proofs.b64(signer.public_key),
            "key_id": ckpt.key_id(signer.public_key)}


@router.post("/decisions/{proposal_id}/replay", summary="Re-run the optimizer and the explainer on "
             "the recorded snapshot and say whether the outputs are identical")
async def replay_decision(proposal_id: uuid.UUID, principal: Reader, request: Request) -> dict[str, object]:
    from .replay import replay

    async with _sessions(request)() as s:
        rep = await replay(s, principal.tenant_id, proposal_id)
    return {
        "proposal_id": str(rep.proposal_id), "identical": rep.identical,
        "snapshot_hash_ok": rep.snapshot_hash_ok, "proposal_identical": rep.proposal_identical,
        "explanation_identical": rep.explanation_identical,
        "recorded_optimizer_version": rep.recorded_optimizer_version,
        "replay_optimizer_version": rep.replay_optimizer_version,
        "proposal_seq": rep.proposal_seq, "explanation_seq": rep.explanation_seq,
        "differences": rep.differences,
    }
