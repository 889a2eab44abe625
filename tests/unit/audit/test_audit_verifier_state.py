"""The offline verifier's memory of the caller's own records, and a log cut below its signed
size: a record of the caller's that a clean run saw and that is no longer served is named by its
seq (so moving a record to another tenant cannot hide it), and records a signed checkpoint covers
that the service no longer has are named as gone (tampering, exit 1), not "could not run"."""

from __future__ import annotations

import base64
import struct
from array import array
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from trimtab.audit import offline
from trimtab.audit.domain import merkle
from trimtab.audit.domain.checkpoint import Signer
from trimtab.audit.offline import OwnRecords, Report, State


def test_own_records_are_kept_and_read_back(tmp_path: Path) -> None:
    state = State(tmp_path / "s")
    assert state.own_records() is None
    signer = Signer.generate()
    cp = signer.sign(7, bytes(32), datetime(2026, 1, 1, tzinfo=UTC))
    state.save(signer.public_key, cp, bytes(7 * 32), OwnRecords("t1", 7, array("Q", [2, 3, 7])))
    got = state.own_records()
    assert got is not None and (got.tenant, got.tree_size, list(got.seqs)) == ("t1", 7, [2, 3, 7])
    # Stored portably: big-endian u64, with a count and the last seq beside them.
    assert (tmp_path / "s" / "own_seqs.bin").read_bytes() == struct.pack(">3Q", 2, 3, 7)
    (tmp_path / "s" / "own_seqs.bin").write_bytes(struct.pack(">2Q", 2, 3))
    with pytest.raises(RuntimeError, match="damaged"):
        state.own_records()


def test_a_record_no_longer_served_is_named() -> None:
    kept = OwnRecords("t1", 10, array("Q", [2, 5, 9]))
    rep = Report()
    offline.compare_own(kept, array("Q", [2, 5, 9, 11, 12]), rep)  # later records are new: fine
    assert rep.ok
    rep = Report()
    offline.compare_own(kept, array("Q", [2, 9, 11]), rep)  # 5 moved to another tenant
    assert (rep.ok, rep.first_bad_seq) == (False, 5)
    assert "no longer served" in rep.problems[0].reason
    rep = Report()
    offline.compare_own(kept, array("Q", [2, 4, 5, 9]), rep)  # 4 was not the caller's at size 10
    assert (rep.ok, rep.first_bad_seq) == (False, 4)
    rep = Report()
    offline.compare_own(OwnRecords("t1", 10, array("Q")), array("Q", [11]), rep)
    assert rep.ok


def _leaves_service(head: int, leaves: list[bytes]) -> httpx.AsyncClient:
    """A service whose log ends at `head` and that answers the shorter range it has (as one that
    clamps to its head does)."""
    def handle(request: httpx.Request) -> httpx.Response:
        start, end = int(request.url.params["start"]), int(request.url.params["end"])
        end = min(end, head)
        body = b"".join(struct.pack(">Q", i + 1) + leaves[i] for i in range(start, max(start, end)))
        return httpx.Response(200, content=body, headers={"X-Start": str(start), "X-End": str(max(start, end))})
    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://test")


async def test_records_cut_from_the_end_below_the_signed_size_are_gone() -> None:
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(10)]
    async with _leaves_service(7, leaves) as client:
        blob, missing = await offline.fetch_leaves(client, 10, page=4)
    assert missing == [8, 9, 10] and len(blob) == 10 * 32
    assert bytes(blob[:7 * 32]) == b"".join(leaves[:7]) and bytes(blob[7 * 32:]) == bytes(3 * 32)
    rep = Report()
    offline.report_missing(rep, [3, 8, 9, 10], 10)
    assert [p.seq for p in rep.problems] == [3, 8] and rep.first_bad_seq == 3
    assert "record 3 is missing" in rep.problems[0].reason
    assert "covered by the signed checkpoint are gone: 8 to 10" in rep.problems[1].reason
    rep = Report()
    offline.report_missing(rep, [4, 6], 10)  # holes, no cut
    assert [p.seq for p in rep.problems] == [4] and "2 missing" in rep.problems[0].reason


async def test_a_service_that_cannot_prove_its_own_signed_head_is_tampering(tmp_path: Path) -> None:
    """The nodes of a signed tree gone from the store (`/consistency` answers 409): a problem
    (exit 1), not "could not run"."""
    signer = Signer.generate()
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(6)]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = State(tmp_path / "kept")
    state.save(signer.public_key, signer.sign(4, merkle.root(leaves[:4]), t0), b"".join(leaves[:4]))
    head = signer.sign(6, merkle.root(leaves), t0)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/checkpoints/latest"):
            return httpx.Response(200, json={**head.to_json(),
                                             "public_key": base64.b64encode(signer.public_key).decode()})
        if request.url.path.endswith("/consistency"):
            return httpx.Response(409, json={"detail": "cannot prove sizes 4 to 6: tree nodes missing"})
        if request.url.path.endswith("/leaves.bin"):
            start, end = int(request.url.params["start"]), int(request.url.params["end"])
            body = b"".join(struct.pack(">Q", i + 1) + leaves[i] for i in range(start, end))
            return httpx.Response(200, content=body, headers={"X-Start": str(start), "X-End": str(end)})
        return httpx.Response(200, content=b"", headers={"X-Next-After-Seq": "", "X-Frame-Format": "2"})  # records.bin: none

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://test") as client:
        rep = await offline.verify_log(client, state, public_key=signer.public_key, workers=0)
    assert not rep.ok and "cannot prove its signed head" in rep.problems[0].reason, rep.to_json()
    assert state.checkpoint() is not None and state.checkpoint().tree_size == 4  # nothing accepted
