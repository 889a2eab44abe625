"""Exports a compliance officer can hand over: JSON Lines with proofs, and an HTML report.

JSON Lines: the first line is the signed checkpoint the proofs are against (with the public key
needed to check it), then one line per record: its indexed columns, the exact envelope bytes
(base64), the leaf hash and its inclusion path; the last line says where the next page starts.
Everything needed to re-check a record is in its line: leaf = SHA-256(0x00 || envelope), the
path leads to the checkpoint's root, the signature covers the root.

The HTML report shows the same records for people: who acted, when, what was decided and why,
with the hashes and the checkpoint to cite.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator, Mapping, Sequence
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
        "payload_valid": row.payload_valid, "envelope_base64": _b64(bytes(row.envelope)),
        "leaf_hash": bytes(row.leaf_hash).hex(),
    }
    if path is not None and cp is not None:
        out["proof"] = {"tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
                        "inclusion_path": [h.hex() for h in path]}
    return out


def jsonl(rows: Sequence[Any], cp: Checkpoint | None, paths: Mapping[int, list[bytes]],
          next_after_seq: int | None) -> Iterator[str]:
    def line(d: dict[str, Any]) -> str:
        return json.dumps(d, separators=(",", ":")) + "\n"

    if cp is not None:
        yield line({"type": "checkpoint", **cp.to_json()})
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


def html_report(rows: Sequence[Any], cp: Checkpoint | None, paths: Mapping[int, list[bytes]],
                public_key: bytes, tenant_id: str, filters: Mapping[str, object]) -> str:
    e = html.escape
    shown = ", ".join(f"{k} = {v}" for k, v in filters.items() if v is not None) or "none"
    head = (f"<p>Checkpoint: tree size <b>{cp.tree_size}</b>, root <code>{cp.root_hash.hex()}</code>, "
            f"signed {e(cp.to_json()['signed_at'])} by key <code>{cp.key_id}</code> (Ed25519; public key "
            f"<code>{_b64(public_key)}</code>).</p>" if cp else
            "<p><b>No signed checkpoint yet:</b> these records carry no inclusion proofs.</p>")
    body = []
    for r in rows:
        producer, who, why = _who_why(bytes(r.envelope))
        proved = "yes" if (r.seq - 1) in paths else "not yet (newer than the checkpoint)"
        body.append(
            "<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in (
                r.seq, r.occurred_at.isoformat(), r.recorded_at.isoformat(), r.event_type, producer,
                r.account_id or "", str(r.proposal_id or ""), who, why[:300], proved))
            + f"<td><code>{bytes(r.leaf_hash).hex()}</code></td></tr>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trimtab audit report: {e(tenant_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}code{{font-size:11px;word-break:break-all}}</style>
</head><body>
<h1>Audit report: tenant {e(tenant_id)}</h1>
<p>Filters: {e(shown)}. Records: {len(rows)}.</p>
{head}
<p>Each record is a leaf of an RFC 6962 Merkle tree: leaf hash = SHA-256(0x00 || the record's exact
envelope bytes). The JSON Lines export of the same filter carries the envelope bytes and each
record's inclusion path to the root above; <code>trimtab-audit verify</code> checks them all.</p>
<table><thead><tr><th>seq</th><th>occurred</th><th>recorded</th><th>event</th><th>producer</th>
<th>account</th><th>proposal</th><th>who</th><th>what / why</th><th>proved</th><th>leaf hash</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
