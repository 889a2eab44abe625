"""Bulk reads for the offline verifier, built by the database in the binary forms of
domain/frames.py: one `string_agg` per page, so neither side spends Python time per column."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .models import SCHEMA

_LEAVES = text(f"""
SELECT coalesce(string_agg(int8send(seq) || leaf_hash, ''::bytea ORDER BY seq), ''::bytea)
  FROM "{SCHEMA}".records WHERE seq > :start AND seq <= :end
""")
# The inner query picks the page (index range scan on (tenant_id, seq)); the outer one frames it.
# recorded_at goes out as whole microseconds since the epoch, computed from whole seconds plus the
# microseconds of the second: exact whatever type extract() returns (numeric since PostgreSQL 14,
# a double before, which cannot hold 16 digits of microseconds exactly).
_FRAME_HEAD = """int8send(seq) || uuid_send(event_id) || uuid_send(correlation_id)
         || int2send(octet_length(event_type)::smallint) || convert_to(event_type, 'UTF8')
         || int2send(octet_length(tenant_id)::smallint) || convert_to(tenant_id, 'UTF8')"""
_PAGE = f"""
  FROM (SELECT seq, event_id, correlation_id, event_type, tenant_id, leaf_format, recorded_at, envelope
          FROM "{SCHEMA}".records
         WHERE tenant_id = :tenant AND seq > :after AND seq <= :max_seq
         ORDER BY seq LIMIT :limit) r
"""
_RECORDS = text(f"""
SELECT coalesce(string_agg(
         {_FRAME_HEAD}
         || int2send(leaf_format)
         || int8send(extract(epoch FROM date_trunc('second', recorded_at))::bigint * 1000000
                     + extract(microseconds FROM recorded_at)::bigint % 1000000)
         || int4send(octet_length(envelope)) || envelope, ''::bytea ORDER BY seq), ''::bytea) AS body,
       count(*) AS n, max(seq) AS last_seq, coalesce(bool_or(leaf_format <> 1), false) AS newer
{_PAGE}""")
#: Frame format 1 (before leaf format 2): no leaf format, no recorded_at. Served to a verifier of an
#: earlier release that asks for nothing else, as long as the page holds format-1 records only.
_RECORDS_V1 = text(f"""
SELECT coalesce(string_agg(
         {_FRAME_HEAD}
         || int4send(octet_length(envelope)) || envelope, ''::bytea ORDER BY seq), ''::bytea) AS body,
       count(*) AS n, max(seq) AS last_seq, coalesce(bool_or(leaf_format <> 1), false) AS newer
{_PAGE}""")


async def leaves(s: AsyncSession, start: int, end: int) -> bytes:
    """Entries (seq, leaf hash) of the records with leaf index in [start, end), in seq order."""
    return bytes((await s.execute(_LEAVES, {"start": start, "end": end})).scalar_one())


class FrameFormatTooOld(Exception):
    """Frame format 1 was asked for a page holding records of a later leaf format."""


async def records(s: AsyncSession, tenant_id: str, after_seq: int, max_seq: int,
                  limit: int, frame_format: int = 2) -> tuple[bytes, int, int | None]:
    """The tenant's records with after_seq < seq <= max_seq (at most `limit`) as record frames of
    `frame_format` (domain/frames.py), how many, and the last seq. FrameFormatTooOld when format 1
    cannot carry the page (a record of leaf format 2 needs its recorded_at)."""
    r = (await s.execute(_RECORDS if frame_format >= 2 else _RECORDS_V1,
                         {"tenant": tenant_id, "after": after_seq, "max_seq": max_seq, "limit": limit})).one()
    if frame_format < 2 and r.newer:
        raise FrameFormatTooOld()
    return bytes(r.body), int(r.n), r.last_seq
