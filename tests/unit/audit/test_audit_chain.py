"""The audit hash chain: known vectors, and every kind of tampering found at the exact seq."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from trimtab.audit.domain import chain
from trimtab.audit.domain.chain import (
    GENESIS_HASH,
    ChainFailure,
    ChainRecord,
    ChainScanner,
    ChainVerifier,
    verify,
)
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import PriceTicked, RebalanceDecided, RiskAlerted

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)


def _envelopes(n: int) -> list[bytes]:
    corr = uuid.uuid4()
    out = []
    for i in range(n):
        if i % 3 == 0:
            p = PriceTicked(symbol=f"S{i}", price_usd=Decimal("10.5") + i, as_of=T0)
        elif i % 3 == 1:
            p = RiskAlerted(alert_id=uuid.uuid4(), kind="vol", message=f"alert {i}")
        else:
            p = RebalanceDecided(proposal_id=uuid.uuid4(), account_id=f"A{i}", decision="approved",
                                 decided_by="advisor@t1", automatic=False, decided_at=T0)
        out.append(Envelope.new(p, producer="test", tenant_id="t1", correlation_id=corr,
                                trace={}).to_bytes())
    return out


def build(envelopes: list[bytes]) -> list[ChainRecord]:
    recs: list[ChainRecord] = []
    prev = GENESIS_HASH
    for i, data in enumerate(envelopes, start=1):
        rec = chain.append(i, data, prev)
        recs.append(rec)
        prev = rec.chain_hash
    return recs


@pytest.fixture
def records() -> list[ChainRecord]:
    return build(_envelopes(5))


def test_leaf_is_the_rfc6962_leaf_hash():
    # RFC 6962 test vector: the leaf hash of the empty entry.
    assert chain.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert chain.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()


def test_chain_links_each_record_to_the_previous_head(records):
    assert records[0].prev_hash == b"\x00" * 32
    assert records[0].chain_hash == hashlib.sha256(b"\x00" * 32 + records[0].leaf_hash).digest()
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.chain_hash
        assert after.chain_hash == hashlib.sha256(before.chain_hash + after.leaf_hash).digest()
    assert len({r.chain_hash for r in records}) == len(records)


def test_intact_chain_verifies(records):
    v = ChainVerifier()
    assert v.feed_all(records) is None
    assert v.ok and v.checked == 5 and v.head_hash == records[-1].chain_hash
    assert verify([]) is None


def test_streaming_in_pieces_equals_verifying_at_once(records):
    v = ChainVerifier()
    for piece in (records[:2], records[2:3], records[3:]):
        assert v.feed_all(piece) is None
    assert v.head_hash == records[-1].chain_hash


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@pytest.mark.parametrize("field", ["envelope", "leaf_hash", "prev_hash", "chain_hash"])
def test_flipping_any_byte_of_any_record_is_found_at_that_seq(records, field):
    for k, rec in enumerate(records):
        original: bytes = getattr(rec, field)
        for i in range(len(original)):
            tampered = list(records)
            tampered[k] = dataclasses.replace(rec, **{field: _flip(original, i)})
            failure = verify(tampered)
            assert failure is not None, (field, rec.seq, i)
            assert failure.seq == rec.seq, (field, rec.seq, i, failure)


def test_rewriting_a_record_with_fresh_hashes_is_found_at_the_next_seq(records):
    # A forger who recomputes one record's own hashes still breaks the link to its successor.
    forged = chain.append(3, b'{"forged":true}', records[1].chain_hash)
    failure = verify([*records[:2], forged, *records[3:]])
    assert failure is not None and failure.seq == 4 and "prev hash" in failure.reason


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_removed_record_is_found_at_its_seq(records, k):
    kept = [r for r in records if r.seq != k]
    failure = verify(kept)
    assert failure is not None and failure.seq == k and "missing" in failure.reason


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_removed_and_renumbered_record_is_found_at_its_seq(records, k):
    kept = [r for r in records if r.seq != k]
    renumbered = [dataclasses.replace(r, seq=i) for i, r in enumerate(kept, start=1)]
    failure = verify(renumbered)
    assert failure is not None and failure.seq == k


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_reordered_records_are_found_at_the_first_displaced_seq(records, k):
    swapped = list(records)
    swapped[k - 1], swapped[k] = swapped[k], swapped[k - 1]
    failure = verify(swapped)
    assert failure is not None and failure.seq == k
    # Also when the seq numbers stay in place and only the contents trade places.
    contents = list(records)
    contents[k - 1] = dataclasses.replace(records[k], seq=k)
    contents[k] = dataclasses.replace(records[k - 1], seq=k + 1)
    failure = verify(contents)
    assert failure is not None and failure.seq == k


def test_a_duplicated_record_is_found(records):
    failure = verify([*records[:3], records[2], *records[3:]])
    assert failure is not None and failure.seq == 4 and "out of order" in failure.reason


def test_a_cut_off_tail_needs_a_checkpoint(records):
    # Documented limit of a bare chain: a shorter prefix is itself a valid chain. The head hash
    # compared with a checkpoint kept elsewhere is what catches it.
    v = ChainVerifier()
    assert v.feed_all(records[:3]) is None
    assert v.head_hash != records[-1].chain_hash


def test_verifier_stops_at_the_first_failure(records):
    bad = [records[0], dataclasses.replace(records[1], envelope=b"x"), dataclasses.replace(records[2], envelope=b"y")]
    v = ChainVerifier()
    assert v.feed_all(bad) is not None
    assert v.failure is not None and v.failure.seq == 2 and v.checked == 2
    assert v.feed(records[2]) is v.failure


def test_append_rejects_bad_input():
    with pytest.raises(ValueError):
        chain.append(0, b"x")
    with pytest.raises(ValueError):
        chain.chain_hash(b"short", b"\x00" * 32)


# ------------------------------------------------------------------ the scanner: the extent


def scan(records: list[ChainRecord]) -> list[ChainFailure]:
    s = ChainScanner()
    out: list[ChainFailure] = []
    for rec in records:
        out.extend(s.feed(rec) or [])
    assert s.checked == len(records)
    return out


def places(failures: list[ChainFailure]) -> dict[int, list[str]]:
    """seq -> the reasons named there (a run of missing records as 'missing..last')."""
    out: dict[int, list[str]] = {}
    for f in failures:
        out.setdefault(f.seq, []).append(f"missing..{f.last_seq}" if f.last_seq is not None else f.reason)
    return out


def _tamperings(records: list[ChainRecord]) -> list[list[ChainRecord]]:
    """Every tampering of the tests above, as whole streams."""
    out = []
    for field in ("envelope", "leaf_hash", "prev_hash", "chain_hash"):
        for k, rec in enumerate(records):
            out.append([*records[:k], dataclasses.replace(rec, **{field: _flip(getattr(rec, field), 0)}),
                        *records[k + 1:]])
    for k in (1, 2, 3, 4):
        kept = [r for r in records if r.seq != k]
        out.append(kept)
        out.append([dataclasses.replace(r, seq=i) for i, r in enumerate(kept, start=1)])
        swapped = list(records)
        swapped[k - 1], swapped[k] = swapped[k], swapped[k - 1]
        out.append(swapped)
    out.append([*records[:3], records[2], *records[3:]])
    out.append([*records[:2], chain.append(3, b'{"forged":true}', records[1].chain_hash), *records[3:]])
    return out


def test_the_scanners_first_failure_is_the_verifiers(records):
    # The report's top level (first bad seq, reason) does not change with the extent kept.
    for stream in _tamperings(records):
        first = verify(stream)
        found = scan(stream)
        assert first is not None and found, stream
        assert (found[0].seq, found[0].reason) == (first.seq, first.reason)
    assert scan(records) == []


def test_the_scanner_names_every_tampered_record_and_nothing_else():
    recs = build(_envelopes(9))
    tampered = list(recs)
    tampered[1] = dataclasses.replace(recs[1], envelope=recs[1].envelope + b" ")  # seq 2: edited
    tampered[3] = dataclasses.replace(recs[3], chain_hash=_flip(recs[3].chain_hash, 5))  # seq 4
    tampered[4] = dataclasses.replace(recs[4], leaf_hash=_flip(recs[4].leaf_hash, 0))  # seq 5
    del tampered[6]  # seq 7 removed
    got = places(scan(tampered))
    assert got == {
        2: ["leaf hash does not match the envelope bytes"],
        # Seq 5's link to 4 holds: its prev hash is the chain hash recomputed for 4.
        4: ["chain hash does not match SHA-256(prev hash || leaf hash)"],
        5: ["leaf hash does not match the envelope bytes", "chain hash does not match SHA-256(prev hash || leaf hash)"],
        7: ["missing..7"],  # once: seq 8's link to the missing record is not judged
    }


def test_a_run_of_removed_records_is_one_failure_naming_the_range():
    recs = build(_envelopes(8))
    failures = scan([r for r in recs if r.seq not in (3, 4, 5)])
    assert failures == [ChainFailure(3, "record missing: expected seq 3, found seq 6", 5)]


def test_a_record_rewritten_with_fresh_hashes_breaks_one_link(records):
    # Its own hashes agree; the next record's prev hash is the one place that disagrees.
    forged = chain.append(3, b'{"forged":true}', records[1].chain_hash)
    assert places(scan([*records[:2], forged, *records[3:]])) == {
        4: ["prev hash does not match the chain hash of the previous record"]}
    # The chain rewritten from there to the head: nothing in the chain itself tells.
    rewritten = [*records[:2], forged]
    for r in records[3:]:
        rewritten.append(chain.append(r.seq, r.envelope, rewritten[-1].chain_hash))
    assert scan(rewritten) == []


def test_the_scanner_streams_in_pieces(records):
    tampered = [records[0], dataclasses.replace(records[1], envelope=b"x"), *records[3:]]
    s = ChainScanner()
    got = [f for piece in (tampered[:1], tampered[1:2], tampered[2:]) for rec in piece for f in (s.feed(rec) or [])]
    assert got == scan(tampered) and [f.seq for f in got] == [2, 3]
