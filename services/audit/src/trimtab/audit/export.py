"""Exports a compliance officer can hand over: JSON Lines with proofs, and a report as HTML or PDF.

JSON Lines: the first line is the signed checkpoint the proofs are against (with the public key
needed to check it), then one line per record: its indexed columns, the exact envelope bytes
(base64), the leaf hash and its inclusion path; the last line says where the next page starts.
Everything needed to re-check a record is in its line: leaf = SHA-256(0x00 || envelope) in leaf
format 1, SHA-256(0x00 || 0x02 || recorded_at || envelope) in format 2 (recorded_at as signed
64-bit big-endian microseconds since the Unix epoch; `recorded_at` in the line is exact to the
microsecond), the path leads to the checkpoint's root, the signature covers the root.

The report (HTML, or PDF for handing over) shows the same records for people: who acted, when,
what was decided and why, with the hashes and the checkpoint to cite. The PDF uses the PDF core
fonts (Latin-1, nothing to bundle): other characters are written as <U+XXXX> and the report says
how many; the PDF's bytes depend only on the records, the checkpoint and the filters.
"""

from __future__ import annotations

import base64
import html
import json
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .domain.checkpoint import Checkpoint

#: Payload fields that say who acted and why; shown in the report's "who / why" column.
_ACTORS = ("decided_by", "approved_by", "overridden_by", "actor", "requested_by")
_REASONS = ("reason", "decision", "comment", "narrative_advisor", "message", "rule")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def record_line(row: Any, path: list[bytes] | None, cp: Checkpoint | None) -> dict[str, Any]:
    out = {
        "type": "record", "seq": row.seq, "leaf_index": row.seq - 1, "event_id": str(row.event_id),
        "event_type": row.event_type, "tenant_id": row.tenant_id,
        "correlation_id": str(row.correlation_id),
        "causation_id": str(row.causation_id) if row.causation_id else None,
        "occurred_at": row.occurred_at.isoformat(), "recorded_at": row.recorded_at.isoformat(),
        "proposal_id": str(row.proposal_id) if row.proposal_id else None, "account_id": row.account_id,
        "household_id": row.household_id,
        "payload_valid": row.payload_valid, "envelope_base64": _b64(bytes(row.envelope)),
        "leaf_format": row.leaf_format, "leaf_hash": bytes(row.leaf_hash).hex(),
    }
    if path is not None and cp is not None:
        out["proof"] = {"tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
                        "inclusion_path": [h.hex() for h in path]}
    return out


def checkpoint_line(cp: Checkpoint, public_key: bytes | None) -> dict[str, Any]:
    """The checkpoint as the export's first line, with what checks it offline: the exact text the
    signature covers and the public key (raw Ed25519, base64) whose SHA-256 is `key_id`: the
    service's own, or a retired or peer key it trusts (AUDIT_TRUSTED_PUBLIC_KEYS). A checkpoint
    naming any other key gets no key here: a key named by id alone would have to be trusted blind."""
    from .domain.checkpoint import key_id

    out: dict[str, Any] = {"type": "checkpoint", **cp.to_json(), "signed_message": cp.message().decode()}
    if public_key is not None and key_id(public_key) == cp.key_id:
        out["public_key"] = _b64(public_key)
    else:
        out["public_key"] = None
        out["public_key_note"] = ("signed by a key this service does not trust (neither its own nor a "
                                  "configured retired or peer key): POST /v1/audit/verify fails on it")
    return out


def jsonl(rows: Sequence[Any], cp: Checkpoint | None, paths: Mapping[int, list[bytes]],
          next_after_seq: int | None, public_key: bytes | None = None) -> Iterator[str]:
    def line(d: dict[str, Any]) -> str:
        return json.dumps(d, separators=(",", ":")) + "\n"

    if cp is not None:
        yield line(checkpoint_line(cp, public_key))
    # Lines in chunks: one ASGI message per line would cost more than the lines themselves.
    for i in range(0, len(rows), 500):
        yield "".join(line(record_line(r, paths.get(r.seq - 1), cp)) for r in rows[i:i + 500])
    yield line({"type": "page", "records": len(rows), "next_after_seq": next_after_seq})


def _who_why(envelope: bytes) -> tuple[str, str, str]:
    try:
        env = json.loads(envelope)
    except ValueError:
        return "", "", ""
    payload = env.get("payload") or {}
    who = next((str(payload[k]) for k in _ACTORS if payload.get(k)), "")
    why = next((str(payload[k]) for k in _REASONS if payload.get(k)), "")
    return str(env.get("producer", "")), who, why


#: Columns of the report's table, in order (HTML and PDF alike).
COLUMNS = ("seq", "occurred", "recorded", "event", "producer", "account", "proposal", "who",
           "what / why", "proved", "leaf hash")
#: The "what / why" column shows at most this many characters; the export has the whole payload.
WHY_MAX = 300


def report_rows(rows: Sequence[Any], paths: Mapping[int, list[bytes]]) -> list[tuple[str, ...]]:
    """The report's table as text, one tuple of COLUMNS per record."""
    out = []
    for r in rows:
        producer, who, why = _who_why(bytes(r.envelope))
        proved = "yes" if (r.seq - 1) in paths else "not yet (newer than the checkpoint)"
        out.append((str(r.seq), r.occurred_at.isoformat(), r.recorded_at.isoformat(), r.event_type, producer,
                    r.account_id or "", str(r.proposal_id or ""), who, why[:WHY_MAX], proved,
                    bytes(r.leaf_hash).hex()))
    return out


def _filters_text(filters: Mapping[str, object]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in filters.items() if v is not None) or "none"


def _page_text(n: int, next_after_seq: int | None) -> str:
    more = (f" More records match: the next page starts after seq {next_after_seq} "
            f"(after_seq={next_after_seq})." if next_after_seq is not None else "")
    return f"Records: {n}.{more}"


_HOW = ("Each record is a leaf of an RFC 6962 Merkle tree: leaf hash = SHA-256(0x00 || the record's exact "
        "envelope bytes). The JSON Lines export of the same filter carries the envelope bytes and each "
        "record's inclusion path to the root above; {verify} checks them all.")


def html_report(rows: Sequence[Any], cp: Checkpoint | None, paths: Mapping[int, list[bytes]],
                public_key: bytes, tenant_id: str, filters: Mapping[str, object],
                next_after_seq: int | None = None) -> str:
    e = html.escape
    head = (f"<p>Checkpoint: tree size <b>{cp.tree_size}</b>, root <code>{cp.root_hash.hex()}</code>, "
            f"signed {e(cp.to_json()['signed_at'])} by key <code>{cp.key_id}</code> (Ed25519; public key "
            f"<code>{_b64(public_key)}</code>).</p>" if cp else
            "<p><b>No signed checkpoint yet:</b> these records carry no inclusion proofs.</p>")
    body = ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in cells[:-1]) + f"<td><code>{cells[-1]}</code></td></tr>"
            for cells in report_rows(rows, paths)]
    how = e(_HOW).replace("{verify}", "<code>trimtab-audit verify</code>")
    ths = "".join(f"<th>{c}</th>" for c in COLUMNS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trimtab audit report: {e(tenant_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}code{{font-size:11px;word-break:break-all}}</style>
</head><body>
<h1>Audit report: tenant {e(tenant_id)}</h1>
<p>Filters: {e(_filters_text(filters))}. {e(_page_text(len(rows), next_after_seq))}</p>
{head}
<p>{how}</p>
<table><thead><tr>{ths}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""


# ------------------------------------------------------------------ PDF

#: Characters outside Latin-1 (the PDF core fonts' range) with a common Latin-1 stand-in; any other
#: is written as <U+XXXX>, so nothing is dropped silently. The JSON Lines export has the exact text.
_STAND_INS = {
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u2022": "*", "\u20ac": "EUR",
    "\u2122": "(TM)", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
}


def latin1(text: str) -> tuple[str, int]:
    """`text` in Latin-1, and how many characters had to be written as <U+XXXX>."""
    if text.isascii():
        return text, 0
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    replaced = 0
    for ch in text:
        if ord(ch) < 256:
            out.append(ch)
        elif ch in _STAND_INS:
            out.append(_STAND_INS[ch])
        else:
            decomposed = unicodedata.normalize("NFKD", ch)
            base = "".join(c for c in decomposed if ord(c) < 256 and not unicodedata.combining(c))
            if base and len(decomposed) > 1:  # e.g. a ligature or a letter with a mark not in Latin-1
                out.append(base)
            else:
                out.append(f"<U+{ord(ch):04X}>")
                replaced += 1
    return "".join(out), replaced


#: Landscape A4 in millimetres; the table's column widths add up to the width between the margins.
_MARGIN = 10.0
_WIDTHS = (11.0, 24.0, 24.0, 24.0, 19.0, 20.0, 25.0, 20.0, 52.0, 15.0, 43.0)
_FONT_PT = 6.5
_HASH_PT = 6.0
_LINE_MM = 2.9
_PAD_MM = 0.8
#: A cell shows at most this many lines (a row then always fits on a page); the rest is cut with
#: a note. Only an absurdly long actor name or id gets there: the "what / why" text is cut at WHY_MAX.
_MAX_LINES = 40
_CUT = "[... cut]"
#: When no checkpoint dates the report: a fixed creation date keeps the bytes reproducible.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _wrap(text: str, width_mm: float, cw: Mapping[str, int], size_pt: float) -> list[str]:
    """Greedy word wrap of `text` to `width_mm` for a core font of widths `cw` (1/1000 em);
    a word wider than the column is broken between characters. Newlines are kept."""
    scale = size_pt * 25.4 / 72 / 1000  # 1/1000 em at size_pt, in mm
    limit = width_mm / scale
    lines: list[str] = []
    for para in text.split("\n"):
        line, used = "", 0
        space = cw.get(" ", 278)
        for word in para.split(" "):
            w = sum(cw.get(c, 600) for c in word)
            gap = space if line else 0
            if used + gap + w <= limit:
                line, used = (line + " " + word) if line else word, used + gap + w
                continue
            if line:
                lines.append(line)
                line, used = "", 0
            while w > limit:  # break an over-long word (a hash, an id) between characters
                part, pw = "", 0
                for c in word:
                    if pw + cw.get(c, 600) > limit and part:
                        break
                    part, pw = part + c, pw + cw.get(c, 600)
                lines.append(part)
                word = word[len(part):]
                w -= pw
            line, used = word, w
        lines.append(line)
    return lines


def pdf_report(rows: Sequence[Any], cp: Checkpoint | None, paths: Mapping[int, list[bytes]],
               public_key: bytes, tenant_id: str, filters: Mapping[str, object],
               next_after_seq: int | None = None) -> bytes:
    """The HTML report's content as a PDF: landscape A4, numbered pages, the table's header
    repeated on every page. The same records and checkpoint give the same bytes (the creation
    date is the checkpoint's signing time, or the latest record's when there is none)."""
    from fpdf import FPDF  # imported on first use: only this report needs it

    replaced = 0

    def t(text: str) -> str:
        nonlocal replaced
        out, n = latin1(text)
        replaced += n
        return out

    tenant = t(tenant_id)

    class Report(FPDF):
        def footer(self) -> None:
            self.set_y(-8)
            self.set_font("Helvetica", size=7)
            self.set_text_color(90)
            self.cell(0, 4, f"Trimtab audit report, tenant {tenant}: page {self.page_no()} of {{nb}}", align="C")

    pdf = Report(orientation="L", unit="mm", format="A4")
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, margin=12)
    created = cp.signed_at if cp else max((r.recorded_at for r in rows), default=_EPOCH)
    pdf.set_creation_date(created if created.tzinfo else created.replace(tzinfo=UTC))
    pdf.set_title(f"Audit report: tenant {tenant}")
    pdf.set_author("Trimtab audit")
    pdf.set_creator("Trimtab audit (GET /v1/audit/export?format=pdf)")
    pdf.add_page()
    full = pdf.w - 2 * _MARGIN

    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(full, 7, f"Audit report: tenant {tenant}", align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.set_font("Helvetica", size=9)
    pdf.multi_cell(full, 4.5, t(f"Filters: {_filters_text(filters)}. {_page_text(len(rows), next_after_seq)}"),
                   align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    if cp is not None:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(full, 5, "Checkpoint (the signed tree head the proofs are against)", new_x="LMARGIN", new_y="NEXT")
        for label, value in (("tree size", f"{cp.tree_size} records"), ("root hash", cp.root_hash.hex()),
                             ("signed at", cp.to_json()["signed_at"]), ("key id", cp.key_id),
                             ("public key", f"{_b64(public_key)} (Ed25519, raw, base64)")):
            pdf.set_font("Helvetica", size=9)
            pdf.cell(24, 4.5, label)
            pdf.set_font("Courier", size=8.5)
            pdf.cell(full - 24, 4.5, value, new_x="LMARGIN", new_y="NEXT")
    else:
        pdf.multi_cell(full, 4.5, "No signed checkpoint yet: these records carry no inclusion proofs.",
                       align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.set_font("Helvetica", size=9)
    pdf.multi_cell(full, 4.5, _HOW.replace("{verify}", "trimtab-audit verify"), align="L",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    body = [tuple(t(c) for c in cells) for cells in report_rows(rows, paths)]
    if replaced:
        pdf.set_font("Helvetica", "I", 8)
        pdf.multi_cell(full, 4, f"{replaced} character(s) outside the PDF fonts' range (Latin-1) are shown as "
                       "<U+XXXX>; the JSON Lines export holds the exact text.", align="L", new_x="LMARGIN",
                       new_y="NEXT")
        pdf.ln(1)
    _table(pdf, body)
    return bytes(pdf.output())


def _table(pdf: Any, body: list[tuple[str, ...]]) -> None:
    """Rows of cells with borders, wrapped to the column widths; a row that does not fit on the
    page starts the next one, under the header again. Drawn with the low-level primitives: the
    wrapping here costs a fraction of fpdf2's general line breaker."""
    bottom = pdf.h - 12
    pdf.set_draw_color(190)
    pdf.set_line_width(0.15)
    xs = [_MARGIN]
    for w in _WIDTHS[:-1]:
        xs.append(xs[-1] + w)
    last = len(_WIDTHS) - 1
    # (family, style, size) and character widths per kind of cell: header, text, the leaf hash.
    kinds = {"head": ("Helvetica", "B", _FONT_PT), "text": ("Helvetica", "", _FONT_PT), "hash": ("Courier", "", _HASH_PT)}
    widths: dict[str, Mapping[str, int]] = {}
    for kind, (family, style, size) in kinds.items():
        pdf.set_font(family, style, size)
        widths[kind] = pdf.current_font.cw

    def row(cells: Sequence[str], head: bool) -> bool:
        cell_kinds = ["head" if head else ("hash" if i == last else "text") for i in range(len(cells))]
        wrapped = [_wrap(c, _WIDTHS[i] - 2 * _PAD_MM, widths[k], kinds[k][2])
                   for i, (c, k) in enumerate(zip(cells, cell_kinds, strict=True))]
        wrapped = [w if len(w) <= _MAX_LINES else [*w[:_MAX_LINES - 1], _CUT] for w in wrapped]
        height = max(len(w) for w in wrapped) * _LINE_MM + 2 * _PAD_MM
        if pdf.get_y() + height > bottom and not head:
            return False
        y = pdf.get_y()
        if head:
            pdf.set_fill_color(235)
            pdf.rect(_MARGIN, y, sum(_WIDTHS), height, style="DF")
        for i, lines in enumerate(wrapped):
            pdf.set_font(*kinds[cell_kinds[i]])
            pdf.rect(xs[i], y, _WIDTHS[i], height)
            for k, line in enumerate(lines):
                if line:
                    pdf.text(xs[i] + _PAD_MM, y + _PAD_MM + (k + 0.78) * _LINE_MM, line)
        pdf.set_y(y + height)
        return True

    row(COLUMNS, head=True)
    for cells in body:
        if not row(cells, head=False):
            pdf.add_page()
            row(COLUMNS, head=True)
            row(cells, head=False)
