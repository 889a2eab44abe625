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


def fetch_records(audit_url: str, headers: dict[str, str], page: int = 1000) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    with httpx.Client(base_url=audit_url, headers=headers, timeout=60) as c:
        while True:
            r = c.get("/v1/audit/records", params={"after_seq": after, "limit": page})
            r.raise_for_status()
            body = r.json()
            items = body["records"] if isinstance(body, dict) else body
            if not items:
                return out
            out.extend(items)
            after = items[-1]["seq"]


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass
class ChainStats:
    counts: dict[str, int] = field(default_factory=dict)
    #: stage -> list of ms from the causing tick
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    chains: int = 0
    complete_chains: int = 0


def analyse(records: list[dict[str, Any]]) -> ChainStats:
    st = ChainStats()
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        env = rec["envelope"]
        st.counts[env["event_type"]] = st.counts.get(env["event_type"], 0) + 1
        by_id[env["event_id"]] = rec
    per_proposal: dict[str, dict[str, dict[str, Any]]] = {}
    drift_by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        env = rec["envelope"]
        if env["event_type"] == "DriftDetected":
            drift_by_id[env["event_id"]] = rec
    for rec in records:
        env = rec["envelope"]
        pid = env["payload"].get("proposal_id")
        if not pid:
            continue
        stage = {"RebalanceProposed": "proposal", "RiskAssessed": "risk", "ExplanationCreated": "explanation",
                 "RebalanceDecided": "decision", "TradesApproved": "approved"}.get(env["event_type"])
        if stage:
            per_proposal.setdefault(pid, {})[stage] = rec
        if env["event_type"] == "RebalanceDecided":
            d = env["payload"]["decision"]
            st.decisions[d] = st.decisions.get(d, 0) + 1
    lat: dict[str, list[float]] = {s: [] for s in STAGES}
    for stages in per_proposal.values():
        prop = stages.get("proposal")
        if not prop:
            continue
        drift = by_id.get(prop["envelope"].get("causation_id") or "")
        tick = by_id.get(drift["envelope"].get("causation_id") or "") if drift else None
        if not drift or not tick:
            continue
        st.chains += 1
        t0 = _ts(tick["envelope"]["occurred_at"])
        stages = {**stages, "drift": drift}
        last_recorded = t0
        for s in STAGES[:-1]:
            if s in stages:
                lat[s].append((_ts(stages[s]["envelope"]["occurred_at"]) - t0).total_seconds() * 1000)
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
