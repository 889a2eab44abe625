"""The compact binary forms of the verifier's bulk reads: leaf hashes and records, without JSON.

A million records as JSON Lines (base64 envelopes, every column as text) cost the verifier more to
parse than to check. These two forms carry only what the checks use, length-prefixed, big-endian:

  leaves   repeated:  seq u64 | leaf hash (32 bytes)
  records  repeated:  seq u64 | event_id (16) | correlation_id (16)
                      | u16 length | event_type (UTF-8) | u16 length | tenant_id (UTF-8)
                      | u16 leaf format | i64 recorded_at (microseconds since the Unix epoch)
                      | u32 length | envelope (the exact canonical bytes the leaf hash covers)

The database builds both (api.py, bulk.py); this module reads and checks them. The records form is
version RECORDS_FORMAT (the `X-Frame-Format` header of `GET /records.bin`): version 1 had no leaf
format or recorded_at, which leaf format 2 hashes (domain/chain.py).
"""

from __future__ import annotations

import hashlib
import json
import struct
from array import array
from collections.abc import Iterator

HASH_BYTES = 32
LEAF_ENTRY = 8 + HASH_BYTES
_LEAF = struct.Struct(">Q32s")
_HEAD = struct.Struct(">Q16s16sH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_LEAF_AT = struct.Struct(">Hq")
#: The version of the records form this module reads (the `X-Frame-Format` header).
RECORDS_FORMAT = 2


class FrameError(ValueError):
    """Bytes that are not a well-formed sequence of frames."""


def leaves(blob: bytes, start: int, end: int) -> tuple[bytes, list[int]]:
    """Leaf hashes of leaf indexes [start, end) (32 zero bytes where one is missing) and the
    missing seqs, from a leaves body; entries must be in ascending seq order inside the range."""
    if len(blob) % LEAF_ENTRY:
        raise FrameError("a leaves body is a whole number of 40-byte entries")
    n = len(blob) // LEAF_ENTRY
    if n == end - start and (not n or (_LEAF.unpack_from(blob, 0)[0] == start + 1
                                       and _LEAF.unpack_from(blob, (n - 1) * LEAF_ENTRY)[0] == end)):
        # Every index present: n strictly ascending seqs (checked below) from start + 1 to end.
        out = bytearray()
        last = start
        for seq, h in _LEAF.iter_unpack(blob):
            if seq != last + 1:
                raise FrameError(f"leaf entries out of order at seq {seq}")
            last = seq
            out += h
        return bytes(out), []
    out, missing, expect = bytearray(), [], start + 1
    for seq, h in _LEAF.iter_unpack(blob):
        if not expect <= seq <= end:
            raise FrameError(f"leaf entry for seq {seq} outside ({start}, {end}] or out of order")
        while expect < seq:
            missing.append(expect)
            out += bytes(HASH_BYTES)
            expect += 1
        out += h
        expect = seq + 1
    while expect <= end:
        missing.append(expect)
        out += bytes(HASH_BYTES)
        expect += 1
    return bytes(out), missing


def records(blob: bytes) -> Iterator[tuple[int, bytes, bytes, str, str, int, int, bytes]]:
    """(seq, event_id bytes, correlation_id bytes, event_type, tenant_id, leaf format, recorded_at
    in microseconds since the epoch, envelope) per frame."""
    mv, pos, n = memoryview(blob), 0, len(blob)
    while pos < n:
        if pos + _HEAD.size > n:
            raise FrameError("truncated record frame")
        seq, eid, cid, lt = _HEAD.unpack_from(blob, pos)
        pos += _HEAD.size
        etype = str(mv[pos:pos + lt], "utf-8")
        pos += lt
        (ln,) = _U16.unpack_from(blob, pos)
        tenant = str(mv[pos + 2:pos + 2 + ln], "utf-8")
        pos += 2 + ln
        if pos + _LEAF_AT.size + 4 > n:
            raise FrameError("truncated record frame")
        fmt, at_us = _LEAF_AT.unpack_from(blob, pos)
        pos += _LEAF_AT.size
        (le,) = _U32.unpack_from(blob, pos)
        pos += 4
        envelope = blob[pos:pos + le]
        if len(envelope) != le:
            raise FrameError("truncated record frame")
        pos += le
        yield seq, eid, cid, etype, tenant, fmt, at_us, envelope


def _uuid_text(b: bytes) -> str:
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def first_frame(blob: bytes) -> tuple[int, str] | None:
    """(seq, tenant_id) of a records body's first frame; None for an empty body."""
    for seq, _, _, _, tenant, _, _, _ in records(blob):
        return seq, tenant
    return None


def check_records(blob: bytes, leaves_from: int, leaves_blob: bytes,
                  upto: int) -> tuple[int, int | None, list[tuple[int | None, str]]]:
    """Re-hash every record of a records body with seq <= upto against the signed tree's leaves
    (`leaves_blob` holds leaf hashes from leaf index `leaves_from` on): how many were checked,
    the last seq seen, and the problems (seq, reason).

    A record is good when its leaf input (chain.py: the envelope in leaf format 1, 0x02, recorded_at
    and the envelope in format 2) hashes to its leaf and the columns served beside it
    (event id, type, tenant, correlation) are the ones inside the hashed bytes. Pure and
    picklable, so the verifier can run it in worker processes."""
    checked, last, problems, _ = check_page(blob, leaves_from, leaves_blob, upto)
    return checked, last, problems


def check_page(blob: bytes, leaves_from: int, leaves_blob: bytes, upto: int, *,
               after: int | None = None, tenant: str | None = None, last: int | None = None,
               ) -> tuple[int, int | None, list[tuple[int | None, str]], bytes]:
    """`check_records`, and the page's place in the caller's view of the log: with `after`, seqs
    strictly ascend from above it (a record served twice, or pages overlapping, is named); with
    `tenant`, every frame is that tenant's (the caller's); with `last` (the continuation the
    service announced), the page ends exactly there. Also returns the seqs checked (<= upto) as
    native unsigned 64-bit integers (`array('Q')` bytes), so the verifier can keep them."""
    sha, loads = hashlib.sha256, json.loads
    checked, seen, problems = 0, None, []
    prev = after
    seqs = array("Q")
    for seq, eid, cid, etype, col_tenant, fmt, at_us, envelope in records(blob):
        seen = seq
        if prev is not None:
            if seq <= prev:
                problems.append((seq, f"served out of order: seq {seq} after seq {prev} (a record served twice, "
                                      "or pages that overlap)"))
            prev = max(prev, seq)
        if tenant is not None and col_tenant != tenant:
            problems.append((seq, f"served as one of your records, but its tenant is {col_tenant!r}, "
                                  f"not yours ({tenant!r})"))
        if seq > upto:
            continue
        checked += 1
        seqs.append(seq)
        at = (seq - 1 - leaves_from) * HASH_BYTES
        if fmt == 1:
            leaf = sha(b"\x00" + envelope).digest()
        elif fmt == 2:
            leaf = sha(b"\x00\x02" + at_us.to_bytes(8, "big", signed=True) + envelope).digest()
        else:
            problems.append((seq, f"the record's leaf format {fmt} is unknown to this verifier"))
            continue
        if at < 0 or leaf != leaves_blob[at:at + HASH_BYTES]:
            problems.append((seq, "the record's envelope does not hash to its leaf in the signed tree "
                                  "(content altered)" if fmt == 1 else
                                  "the record's envelope and recorded_at do not hash to its leaf in the signed "
                                  "tree (content altered, or its time of recording)"))
            continue
        try:
            env = loads(envelope)
        except ValueError:
            problems.append((seq, "the record's envelope is not JSON"))
            continue
        wrong = [k for k, v in (("event_id", _uuid_text(eid)), ("event_type", etype), ("tenant_id", col_tenant),
                                ("correlation_id", _uuid_text(cid))) if str(env.get(k)) != v]
        if wrong:
            problems.append((seq, f"the record's columns disagree with its envelope: {', '.join(wrong)}"))
    if last is not None and seen != last:
        problems.append((None, f"a page of your records announced it ends at seq {last}, but its last record "
                               f"is {seen} (records between pages may have been skipped)"))
    return checked, seen, problems, seqs.tobytes()
