"""The compliance report: HTML and PDF from the same rows, the PDF reproducible to the byte,
landscape A4 with numbered pages, long text wrapped, text outside Latin-1 shown, not a crash."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from trimtab.audit import export
from trimtab.audit.domain.checkpoint import Checkpoint

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
REASON = "Client asked to keep the café position 😀 until “January”"


@dataclass
class Row:
    seq: int
    occurred_at: datetime
    recorded_at: datetime
    event_type: str
    account_id: str | None
    proposal_id: uuid.UUID | None
    envelope: bytes
    leaf_hash: bytes


def rows(n: int, reason: str = REASON) -> list[Row]:
    out = []
    for i in range(1, n + 1):
        env = {"producer": "optimizer", "payload": {"decided_by": "advisor@t1", "reason": f"{reason} #{i}"}}
        data = json.dumps(env).encode()
        out.append(Row(i, T0 + timedelta(seconds=i), T0 + timedelta(seconds=i, microseconds=5), "RebalanceDecided",
                       "ACC-1", uuid.UUID(int=i), data, hashlib.sha256(b"\x00" + data).digest()))
    return out


CP = Checkpoint(tree_size=4242, root_hash=bytes(range(32)), signed_at=T0 + timedelta(days=1), key_id="ab" * 32,
                signature=b"\x00" * 64)
KEY = b"\x01" * 32


def pdf_text(pdf: bytes) -> bytes:
    """Every content stream of a PDF, inflated: enough to find the text fpdf2 wrote (core fonts
    write Latin-1 bytes in literal strings)."""
    out = []
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            out.append(zlib.decompress(m.group(1)))
        except zlib.error:
            out.append(m.group(1))
    return b"\n".join(out)


def test_text_outside_latin1_is_shown_not_a_crash():
    assert export.latin1("café") == ("café", 0)
    assert export.latin1("a 😀 b") == ("a <U+1F600> b", 1)
    assert export.latin1("“quoted” – ok…") == ('"quoted" - ok...', 0)
    assert export.latin1("ﬁne") == ("fine", 0)  # a ligature decomposes to letters
    # ó is Latin-1; ź keeps its letter without the mark; Ł has no decomposition.
    assert export.latin1("Łódź") == ("<U+0141>ódz", 1)
    assert export.latin1("日本") == ("<U+65E5><U+672C>", 2)


def test_wrap_keeps_to_the_width_and_breaks_long_words():
    cw = {chr(i): 500 for i in range(256)}  # every character 0.5 em
    # 10 pt: 0.5 em = 5 pt = 1.764 mm; 10 mm holds 5 characters.
    assert export._wrap("ab cd ef", 10, cw, 10) == ["ab cd", "ef"]
    assert export._wrap("a" * 12, 10, cw, 10) == ["aaaaa", "aaaaa", "aa"]
    assert export._wrap("x\ny", 10, cw, 10) == ["x", "y"]
    assert export._wrap("", 10, cw, 10) == [""]


def test_the_pdf_is_landscape_a4_numbered_and_reproducible():
    rs = rows(120)
    paths = {r.seq - 1: [] for r in rs[:100]}
    filters = {"household_id": "HH-1", "account_id": None}
    pdf = export.pdf_report(rs, CP, paths, KEY, "t1", filters, next_after_seq=120)
    assert pdf.startswith(b"%PDF-")
    assert pdf == export.pdf_report(rs, CP, paths, KEY, "t1", filters, next_after_seq=120)
    # The creation date is the checkpoint's signing time, not the clock.
    assert b"/CreationDate (D:20240103210000Z)" in pdf
    assert re.search(rb"/MediaBox \[0 0 841\.89 595\.28\]", pdf)  # A4, landscape (points)
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    assert pages > 2
    text = pdf_text(pdf)
    # The total is fpdf2's alias, written as its own string once known.
    assert b"(Trimtab audit report, tenant t1: page 1 of ) Tj (%d) Tj" % pages in text
    assert b"(Trimtab audit report, tenant t1: page %d of ) Tj (%d) Tj" % (pages, pages) in text
    for s in ("Audit report: tenant t1", "household_id = HH-1", "Records: 120.", "after_seq=120", "4242 records",
              CP.root_hash.hex(), CP.key_id, "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "trimtab-audit verify",
              "RebalanceDecided", "advisor@t1", "not yet"):
        assert s.encode("latin-1") in text, s
    assert "café".encode("latin-1") in text and b"<U+1F600>" in text and b'"January"' in text
    assert b"120 character" in text  # the report says how many characters it could not show
    # Every leaf hash, in two lines of the hash column.
    for r in rs:
        h = r.leaf_hash.hex()
        assert h[:32].encode() in text and h[32:].encode() in text
    # Another filter or checkpoint is another document.
    assert export.pdf_report(rs, CP, paths, KEY, "t1", {"household_id": "HH-2"}, 120) != pdf


def test_the_pdf_without_a_checkpoint_is_dated_by_its_records_and_long_cells_are_cut():
    rs = rows(3, reason="word " * 2000)
    rs[0].envelope = json.dumps({"producer": "p", "payload": {"decided_by": "x" * 20_000}}).encode()
    pdf = export.pdf_report(rs, None, {}, KEY, "t1", {}, None)
    assert pdf == export.pdf_report(rs, None, {}, KEY, "t1", {}, None)
    assert b"/CreationDate (D:20240102210003Z)" in pdf
    text = pdf_text(pdf)
    assert b"No signed checkpoint yet" in text and b"[... cut]" in text


def test_html_and_pdf_show_the_same_rows():
    rs = rows(2)
    html = export.html_report(rs, CP, {0: []}, KEY, "t1", {"household_id": "HH-1"}, None)
    assert "household_id = HH-1" in html and "café" in html and "😀" in html
    for cells in export.report_rows(rs, {0: []}):
        for c in cells:
            assert escape(c) in html
    assert export.report_rows(rs, {0: []})[1][9].startswith("not yet")
