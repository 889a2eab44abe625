"""Read the audit record back and measure each decision chain: time from the tick that caused a
drift to each later stage (drift, proposal, risk, explanation, decision, approved trades, audit).
Used by the demo's summary and by bench/e2e.py."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

STAGES = ["drift", "proposal", "risk", "explanation", "decision", "approved", "audited"]


def fetch_records(audit_url: str, headers: dict[str, str], page: int = 1000, after_seq: int = 0,
                  **filters: str) -> list[dict[str, Any]]:
    """Every record of the caller's tenant after `after_seq` (summary fields, no payloads)."""
    out: list[dict[str, Any]] = []
    after: int | None = after_seq
    with httpx.Client(base_url=audit_url, headers=headers, timeout=60) as c:
        while after is not None:
            r = c.get("/v1/audit/records", params={"after_seq": after, "limit": page, **filters})
            r.raise_for_status()
            body = r.json()
            out.extend(body["items"])
            after = body["next_after_seq"]
    return out


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass
class ChainStats:
    counts: dict[str, int] = field(default_factory=dict)
    #: stage -> list of ms from the causing tick
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    chains: int = 0
    complete_chains: int = 0
    #: proposals superseded: expired (e.g. on a price move) and proposed again for a new drift
    #: that the expiry caused; their chain is counted once, at its last proposal
    superseded: int = 0


_STAGE_OF = {"RebalanceProposed": "proposal", "RiskAssessed": "risk", "ExplanationCreated": "explanation",
             "RebalanceDecided": "decision", "TradesApproved": "approved"}


def analyse(records: list[dict[str, Any]]) -> ChainStats:
    """Per chain: the tick that caused its first drift (via causation ids), then each stage's
    `occurred_at`; "audited" is when the last event of the chain was recorded.

    A proposal expired and proposed again (the drift monitor checks the account at once after
    a price-move expiry: the new drift's cause is that decision) continues the chain of the
    first: the chain is measured from the first drift's tick to the last proposal's stages, and
    the expired proposal is counted in `superseded`, not as a chain of its own."""
    st = ChainStats()
    by_id: dict[str, dict[str, Any]] = {}
    per_proposal: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in records:
        st.counts[rec["event_type"]] = st.counts.get(rec["event_type"], 0) + 1
        by_id[rec["event_id"]] = rec
        stage = _STAGE_OF.get(rec["event_type"])
        if stage and rec.get("proposal_id"):
            per_proposal.setdefault(rec["proposal_id"], {}).setdefault(stage, rec)
    causes = {r.get("causation_id") for r in records if r["event_type"] == "DriftDetected"}
    superseded = {pid for pid, stages in per_proposal.items()
                  if "decision" in stages and stages["decision"]["event_id"] in causes}
    st.superseded = len(superseded)

    def origin(pid: str, hops: int = 0) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(first drift, its tick) of the chain that `pid` ends or continues."""
        prop = per_proposal.get(pid, {}).get("proposal")
        drift = by_id.get(prop.get("causation_id") or "") if prop else None
        cause = by_id.get(drift.get("causation_id") or "") if drift else None
        if cause is None or drift is None:
            return None
        if cause["event_type"] == "RebalanceDecided" and cause.get("proposal_id") and hops < 32:
            return origin(cause["proposal_id"], hops + 1)
        return (drift, cause) if cause["event_type"] == "PriceTicked" else None

    lat: dict[str, list[float]] = {s: [] for s in STAGES}
    for pid, stages in per_proposal.items():
        if pid in superseded:
            continue
        found = origin(pid)
        if found is None:
            continue
        drift, tick = found
        st.chains += 1
        t0 = _ts(tick["occurred_at"])
        stages = {**stages, "drift": drift}
        last_recorded = t0
        for s in STAGES[:-1]:
            if s in stages:
                lat[s].append((_ts(stages[s]["occurred_at"]) - t0).total_seconds() * 1000)
                last_recorded = max(last_recorded, _ts(stages[s]["recorded_at"]))
        if "decision" in stages:
            st.complete_chains += 1
            lat["audited"].append((last_recorded - t0).total_seconds() * 1000)
    st.latencies_ms = lat
    return st


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if p < 100 else max(values)
