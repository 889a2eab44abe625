"""The optimizer's queue gauges (deploy/prometheus/alerts.yml: TrimtabProposalStuckBeforeReady)
reach the services' Prometheus exposition, and a count the sweep stopped refreshing is not
exported (it would keep ageing and fire the alert for proposals long decided). The counting
query runs against PostgreSQL in tests/integration/optimizer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support import prometheus_samples, services_telemetry
from trimtab.optimizer import metrics
from trimtab.optimizer.metrics import QueueStats
from trimtab.shared.envelope import utcnow


@pytest.fixture(autouse=True, scope="module")
def telemetry() -> None:
    services_telemetry()


def samples(tenant: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for s in prometheus_samples():
        if s.name.startswith("trimtab_optimizer_o") and s.labels.get("tenant") == tenant:
            out.setdefault(s.name, {})[s.labels["state"]] = s.value
    return out


def test_open_proposals_and_the_oldest_age_by_tenant_and_state(monkeypatch) -> None:
    q = QueueStats(max_age_s=180)
    try:
        now = utcnow()
        q.update([("t-unit", "ready", 3, now - timedelta(hours=2)), ("t-unit", "assessed", 1, now - timedelta(minutes=5))])
        got = samples("t-unit")
        assert got["trimtab_optimizer_open_proposals"] == {"ready": 3.0, "assessed": 1.0}
        ages = got["trimtab_optimizer_oldest_open_proposal_age_seconds"]
        assert 7200 <= ages["ready"] < 7260 and 300 <= ages["assessed"] < 360
        # The sweep stopped counting (database down): after max_age_s nothing is exported.
        monkeypatch.setattr(metrics, "utcnow", lambda: now + timedelta(seconds=181))
        assert samples("t-unit") == {}
    finally:
        q.close()
    monkeypatch.undo()
    assert samples("t-unit") == {}  # a closed (stopped) service exports nothing


def test_approvals_awaiting_execution_and_the_oldest_age_by_tenant(monkeypatch) -> None:
    q = QueueStats(max_age_s=180)
    try:
        now = utcnow()
        q.update([], [("t-wait", 2, now - timedelta(hours=30))])
        got = {s.name: s for s in prometheus_samples() if s.labels.get("tenant") == "t-wait"}
        assert got["trimtab_optimizer_approvals_awaiting_execution"].value == 2.0
        age = got["trimtab_optimizer_oldest_approval_awaiting_execution_age_seconds"].value
        assert 30 * 3600 <= age < 30 * 3600 + 60
        monkeypatch.setattr(metrics, "utcnow", lambda: now + timedelta(seconds=181))
        assert not [s for s in prometheus_samples() if s.labels.get("tenant") == "t-wait"]
    finally:
        q.close()
