"""The append's in-memory right edge (merkle.Frontier) and the verifier's binary bulk forms
(domain/frames.py): the frontier makes exactly the nodes and roots of the reference tree, from
empty or resumed at any size; leaf pages name the missing seqs; a record page names the record
whose envelope, leaf or columns were changed."""

from __future__ import annotations

import hashlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.audit.domain import frames, merkle


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"leaf %d" % i) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), data=st.data())
def test_frontier_makes_the_stored_tree_from_any_resumed_size(n, data):
    leaves = _leaves(n)
    t = merkle.Tree(leaves)
    k = data.draw(st.integers(0, n))
    f = merkle.Frontier(k, {node: t.node(node) for node in merkle.decompose(0, k)})
    made = [node for leaf in leaves[k:] for node in f.append(leaf)]
    # Every node a store needs for leaves k.., each once, with the reference tree's hash.
    want = {(0, i, leaves[i]) for i in range(k, n)} | {
        (lv, i, h) for lv in range(1, len(t.levels)) for i, h in enumerate(t.levels[lv])
        if ((i + 1) << lv) > k}
    assert sorted(made) == sorted(want) and len(made) == len(want)
    assert f.root() == merkle.root(leaves) == t.root()
    g = merkle.Frontier(k, {node: t.node(node) for node in merkle.decompose(0, k)})
    g.extend(leaves[k:])
    assert (g.size, g.root()) == (n, t.root())


def test_frontier_needs_its_nodes():
    with pytest.raises(ValueError):
        merkle.Frontier(3)


def _leaf_body(entries: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack(">Q", s) + h for s, h in entries)


def test_leaf_pages_give_the_hashes_and_name_the_missing_seqs():
    hs = _leaves(6)
    full = _leaf_body([(i + 1, h) for i, h in enumerate(hs)])
    assert frames.leaves(full, 0, 6) == (b"".join(hs), [])
    gappy = _leaf_body([(2, hs[1]), (3, hs[2]), (5, hs[4])])  # seqs 1, 4 and 6 gone
    blob, missing = frames.leaves(gappy, 0, 6)
    assert missing == [1, 4, 6]
    assert blob == bytes(32) + hs[1] + hs[2] + bytes(32) + hs[4] + bytes(32)
    with pytest.raises(frames.FrameError):  # not whole entries
        frames.leaves(full[:-1], 0, 6)
    with pytest.raises(frames.FrameError):  # out of order
        frames.leaves(_leaf_body([(1, hs[0]), (3, hs[2]), (2, hs[1])]), 0, 3)
    with pytest.raises(frames.FrameError):  # outside the range asked for
        frames.leaves(_leaf_body([(7, hs[0])]), 0, 6)


def _record(seq: int, env: bytes, eid: uuid.UUID, cid: uuid.UUID, etype: str = "PriceTicked",
            tenant: str = "t1", fmt: int = 1, at_us: int = 0) -> bytes:
    et, tn = etype.encode(), tenant.encode()
    return (struct.pack(">Q", seq) + eid.bytes + cid.bytes + struct.pack(">H", len(et)) + et
            + struct.pack(">H", len(tn)) + tn + struct.pack(">Hq", fmt, at_us) + struct.pack(">I", len(env)) + env)


def _envelope(eid: uuid.UUID, cid: uuid.UUID, n: int) -> bytes:
    return (b'{"correlation_id":"%s","event_id":"%s","event_type":"PriceTicked","n":%d,"tenant_id":"t1"}'
            % (str(cid).encode(), str(eid).encode(), n))


def test_record_pages_name_the_altered_record():
    ids = [(uuid.uuid4(), uuid.uuid4()) for _ in range(5)]
    envs = [_envelope(e, c, i) for i, (e, c) in enumerate(ids)]
    leaves = b"".join(hashlib.sha256(b"\x00" + x).digest() for x in envs)
    body = b"".join(_record(i + 1, envs[i], *ids[i]) for i in range(5))
    assert frames.check_records(body, 0, leaves, 5) == (5, 5, [])
    assert frames.check_records(body, 0, leaves, 3)[:2] == (3, 5)  # beyond the signed size: skipped
    # The leaves of a later part of the log only (a page's slice).
    assert frames.check_records(b"".join(_record(i + 1, envs[i], *ids[i]) for i in (3, 4)), 3, leaves[96:], 5) \
        == (2, 5, [])

    altered = body.replace(b'"n":2', b'"n":9')
    _, _, problems = frames.check_records(altered, 0, leaves, 5)
    assert [p[0] for p in problems] == [3] and "content altered" in problems[0][1]

    other = uuid.uuid4()  # the column moved to another event id; the bytes still hash right
    moved = b"".join(_record(i + 1, envs[i], other if i == 1 else ids[i][0], ids[i][1]) for i in range(5))
    _, _, problems = frames.check_records(moved, 0, leaves, 5)
    assert problems == [(2, "the record's columns disagree with its envelope: event_id")]
    wrong_tenant = b"".join(_record(i + 1, envs[i], *ids[i], tenant="t2" if i == 4 else "t1") for i in range(5))
    assert [p[0] for p in frames.check_records(wrong_tenant, 0, leaves, 5)[2]] == [5]

    swapped = b"".join(_record(i + 1, envs[j], *ids[j]) for i, j in enumerate([0, 2, 1, 3, 4]))
    assert [p[0] for p in frames.check_records(swapped, 0, leaves, 5)[2]] == [2, 3]
    with pytest.raises(frames.FrameError):
        frames.check_records(body[:-3], 0, leaves, 5)


def test_record_pages_are_the_callers_and_ascend():
    """`check_page`: every frame is the caller's tenant's, seqs strictly ascend from above the
    page's `after` (a record served twice or overlapping pages are named), the page ends where its
    continuation says, and the seqs checked come back for the verifier to keep."""
    from array import array

    ids = [(uuid.uuid4(), uuid.uuid4()) for _ in range(5)]
    envs = [_envelope(e, c, i) for i, (e, c) in enumerate(ids)]
    leaves = b"".join(hashlib.sha256(b"\x00" + x).digest() for x in envs)
    body = b"".join(_record(i + 1, envs[i], *ids[i]) for i in range(5))
    checked, last, problems, seqs = frames.check_page(body, 0, leaves, 4, after=0, tenant="t1", last=5)
    assert (checked, last, problems) == (4, 5, []) and list(array("Q", seqs)) == [1, 2, 3, 4]
    assert frames.first_frame(body) == (1, "t1") and frames.first_frame(b"") is None

    # Served to someone else: each frame named (its columns agree with its bytes: only the tenant check sees it).
    assert [p[0] for p in frames.check_page(body, 0, leaves, 5, after=0, tenant="t2")[2]] == [1, 2, 3, 4, 5]
    # A record served twice, and a page that starts at or before the last one's end.
    twice = b"".join(_record(i + 1, envs[i], *ids[i]) for i in (0, 1, 1, 2))
    problems = frames.check_page(twice, 0, leaves, 5, after=0, tenant="t1")[2]
    assert [p[0] for p in problems] == [2] and "out of order" in problems[0][1]
    assert [p[0] for p in frames.check_page(body, 0, leaves, 5, after=2, tenant="t1")[2]] == [1, 2]
    # A continuation past the page's last record would skip the records in between.
    problems = frames.check_page(body, 0, leaves, 5, after=0, tenant="t1", last=9)[2]
    assert problems and problems[0][0] is None and "ends at seq 9" in problems[0][1]
    # check_records is the page check without the caller's view (as before).
    assert frames.check_records(twice, 0, leaves, 5) == (4, 3, [])


def test_record_pages_check_the_time_of_recording_in_leaf_format_2():
    """Leaf format 2 hashes recorded_at with the envelope (chain.record_leaf_hash): a frame whose
    recorded_at was changed (the envelope untouched) is named, as is a leaf format the verifier
    does not know. Format-1 and format-2 records mix in one page (a log written before and after
    the tenth session)."""
    from datetime import UTC, datetime, timedelta

    from trimtab.audit.domain import chain

    ids = [(uuid.uuid4(), uuid.uuid4()) for _ in range(4)]
    envs = [_envelope(e, c, i) for i, (e, c) in enumerate(ids)]
    t0 = datetime(2026, 11, 25, 9, 0, 0, 123456, tzinfo=UTC)
    ats = [t0 + timedelta(microseconds=7 * i) for i in range(4)]
    fmts = [1, 1, 2, 2]
    leaves = b"".join(chain.record_leaf_hash(envs[i], ats[i], fmts[i]) for i in range(4))
    assert chain.record_leaf_hash(envs[2], ats[2], 2) == hashlib.sha256(
        b"\x00\x02" + chain.micros(ats[2]).to_bytes(8, "big", signed=True) + envs[2]).digest()
    body = b"".join(_record(i + 1, envs[i], *ids[i], fmt=fmts[i], at_us=chain.micros(ats[i])) for i in range(4))
    assert frames.check_records(body, 0, leaves, 4) == (4, 4, [])
    moved = b"".join(_record(i + 1, envs[i], *ids[i], fmt=fmts[i], at_us=chain.micros(ats[i]) + (1 if i == 3 else 0))
                     for i in range(4))
    problems = frames.check_records(moved, 0, leaves, 4)[2]
    assert [p[0] for p in problems] == [4] and "its time of recording" in problems[0][1]
    # A format-1 record's recorded_at is outside its hash (what format 2 closes).
    assert frames.check_records(b"".join(_record(i + 1, envs[i], *ids[i], fmt=fmts[i], at_us=0) for i in range(2)),
                                0, leaves, 2) == (2, 2, [])
    unknown = b"".join(_record(i + 1, envs[i], *ids[i], fmt=3 if i == 0 else fmts[i], at_us=chain.micros(ats[i]))
                       for i in range(2))
    problems = frames.check_records(unknown, 0, leaves, 2)[2]
    assert problems == [(1, "the record's leaf format 3 is unknown to this verifier")]
