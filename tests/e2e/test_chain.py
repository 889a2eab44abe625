"""The six services as separate processes on real Kafka and PostgreSQL: a tick batch goes in, the
whole chain comes out in the audit record under one correlation id, the chain verifies, and a
service killed mid-run (SIGKILL) picks up where it left off after a restart."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import auth
from trimtab_dev.oms import OmsSimulator
from trimtab_dev.stack import Stack

pytestmark = pytest.mark.e2e

CHAIN = ["PriceTicked", "DriftDetected", "RebalanceProposed", "RiskAssessed", "ExplanationCreated",
         "RebalanceDecided", "TradesApproved", "TradesExecuted"]
TENANT = "e2e"
PRICES = {"AAA": 100, "BBB": 50, "CCC": 20, "DDD": 80}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = Stack(workdir=tmp_path_factory.mktemp("stack"), database_name=f"trimtab_e2e_{uuid.uuid4().hex[:8]}",
               extra_env={"DRIFT_MIN_INTERVAL_S": "0"})
    with st:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        oms = OmsSimulator(st.bootstrap, group_id=f"oms-{uuid.uuid4().hex[:6]}",
                           reject_accounts=frozenset({"REJ-1"}))
        asyncio.run_coroutine_threadsafe(oms.start(), loop).result(60)
        st.oms = oms  # type: ignore[attr-defined]
        yield st
        asyncio.run_coroutine_threadsafe(oms.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)


def _c(stack: Stack, svc: str, tenant: str = TENANT) -> httpx.Client:
    return httpx.Client(base_url=stack.url(svc), headers=auth(tenant, subject=f"advisor@{tenant}"), timeout=30)


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


def _ticks(prices: dict[str, float], day: datetime) -> dict[str, Any]:
    return {"ticks": [{"symbol": s, "price_usd": str(p), "as_of": day.isoformat()} for s, p in prices.items()]}


def _account(acc_id: str, automation: str) -> dict[str, Any]:
    # 25 % each of AAA..DDD at the opening prices, a little cash
    lots = [{"lot_id": f"{acc_id}-{s}", "symbol": s, "shares": str(int(25_000 / p)),
             "cost_basis_usd_per_share": str(p * 0.9), "acquired_on": "2020-01-02"} for s, p in PRICES.items()]
    return {"account_id": acc_id, "household_id": f"HH-{acc_id}", "account_type": "taxable", "model_id": "m4",
            "cash_usd": "2000.00", "cash_reserve_usd": "500.00",
            "policy": {"band_abs": "0.05", "automation": automation}, "lots": lots}


def _per_account(recs: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for x in recs:
        acc = x["envelope"]["payload"].get("account_id")
        if acc:
            out.setdefault(acc, set()).add(x["envelope"]["event_type"])
    return out


def _wait_chain(audit: httpx.Client, correlation_id: str, want: set[str], accounts: set[str],
                timeout_s: float = 90) -> list[dict[str, Any]]:
    """Wait until every account in `accounts` has every event type of `want` (ticks are keyed
    by symbol, so PriceTicked is checked for the chain as a whole)."""
    deadline = time.monotonic() + timeout_s
    recs: list[dict[str, Any]] = []
    per_account_want = want - {"PriceTicked"}
    while time.monotonic() < deadline:
        r = audit.get(f"/v1/audit/chains/{correlation_id}")
        if r.status_code == 200:
            body = r.json()
            recs = body["records"]
            pa = _per_account(recs)
            if "PriceTicked" in {x["envelope"]["event_type"] for x in recs} and all(
                    per_account_want <= pa.get(acc, set()) for acc in accounts):
                return recs
        time.sleep(0.5)
    raise AssertionError(f"chain {correlation_id} incomplete: {[x['envelope']['event_type'] for x in recs]}")


def _wait_ready_proposal(opt: httpx.Client, account_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = _ok(opt.get("/v1/proposals", params={"account_id": account_id, "state": "ready"}))
        items = body["proposals"] if isinstance(body, dict) else body
        if items:
            return items[0]
        time.sleep(0.5)
    raise AssertionError(f"no ready proposal for {account_id}")


def test_tick_to_audit_full_chain_then_kill_and_restart(stack: Stack) -> None:
    md, dm, opt, audit = (_c(stack, s) for s in ("market-data", "drift-monitor", "optimizer", "audit"))
    _ok(md.post("/v1/securities", json=[{"symbol": s, "name": s, "asset_class": "us_equity"} for s in PRICES]))
    day0 = datetime(2024, 1, 2, 21, tzinfo=UTC)
    _ok(md.post("/v1/ticks", json=_ticks(PRICES, day0)))
    _ok(dm.post("/v1/models", json={"model_id": "m4", "name": "Four", "targets": {s: "0.24" for s in PRICES}}))
    body = _ok(dm.post("/v1/accounts/bulk", json={"accounts": [_account("AUTO-1", "automatic"),
                                                               _account("ADV-1", "advisor_approval")]}))
    assert not body.get("rejected")
    time.sleep(1)

    # A shock: AAA +60 %, DDD -40 %: both accounts leave their 5 % band.
    shock = {"AAA": 160, "BBB": 50, "CCC": 20, "DDD": 48}
    corr = _ok(md.post("/v1/ticks", json=_ticks(shock, day0 + timedelta(days=1))))["correlation_id"]

    # The advisor-approval account waits for a human; approve it through the API.
    ready = _wait_ready_proposal(opt, "ADV-1")
    _ok(opt.post(f"/v1/proposals/{ready['proposal_id']}/approve", headers={"Idempotency-Key": "k1"},
                 json={"reason": "reviewed"}))
    recs = _wait_chain(audit, corr, set(CHAIN), {"AUTO-1", "ADV-1"})
    assert {r["envelope"]["correlation_id"] for r in recs} == {corr}
    accounts = {r["envelope"]["payload"].get("account_id") for r in recs if r["envelope"]["event_type"] == "TradesApproved"}
    assert accounts == {"AUTO-1", "ADV-1"}
    # One trace follows the tick through every service (W3C trace context in each envelope):
    # the automatic account's whole chain shares the tick batch's trace id.
    def trace_id(r: dict[str, Any]) -> str:
        return r["envelope"]["trace"]["traceparent"].split("-")[1]

    tick_traces = {trace_id(r) for r in recs if r["envelope"]["event_type"] == "PriceTicked"}
    auto = [r for r in recs if r["envelope"]["payload"].get("account_id") == "AUTO-1"]
    assert len(tick_traces) == 1 and {trace_id(r) for r in auto} == tick_traces
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(seqs)
    assert _ok(audit.post("/v1/audit/verify"))["ok"] is True

    # Another tenant sees none of it.
    other = _c(stack, "audit", tenant="someone-else")
    r = other.get(f"/v1/audit/chains/{corr}")
    assert r.status_code == 404 or not (r.json()["records"] if isinstance(r.json(), dict) else r.json())

    # Kill the optimizer (no graceful shutdown), shock again, restart it: the chain still completes.
    stack.services["optimizer"].kill()
    shock2 = {"AAA": 60, "BBB": 90, "CCC": 20, "DDD": 120}
    corr2 = _ok(md.post("/v1/ticks", json=_ticks(shock2, day0 + timedelta(days=2))))["correlation_id"]
    time.sleep(2)
    stack.restart("optimizer")
    opt2 = _c(stack, "optimizer")
    ready2 = _wait_ready_proposal(opt2, "ADV-1", timeout_s=90)
    _ok(opt2.post(f"/v1/proposals/{ready2['proposal_id']}/approve", headers={"Idempotency-Key": "k2"}, json={}))
    recs2 = _wait_chain(audit, corr2, set(CHAIN), {"AUTO-1", "ADV-1"}, timeout_s=120)
    assert {r["envelope"]["correlation_id"] for r in recs2} == {corr2}
    assert _ok(audit.post("/v1/audit/verify"))["ok"] is True


def test_an_oms_refusal_ends_the_approval_and_the_account_trades_again(stack: Stack) -> None:
    """The OMS refuses every order of one account (`trades.unfilled.v1`): its proposal ends
    `unfilled`, the record holds the refusal in the tick's chain, and the account is neither
    stuck at the drift monitor (executing) nor at the optimizer (awaiting execution): the next
    shock's proposal is approved and sent to the OMS again."""
    md, dm, opt, audit = (_c(stack, s) for s in ("market-data", "drift-monitor", "optimizer", "audit"))
    _ok(dm.post("/v1/accounts/bulk", json={"accounts": [_account("REJ-1", "automatic")]}))
    day = datetime(2024, 2, 1, 21, tzinfo=UTC)
    _ok(md.post("/v1/ticks", json=_ticks(PRICES, day)))
    time.sleep(1)
    approved: list[str] = []
    for i, shock in enumerate(({"AAA": 170, "BBB": 50, "CCC": 20, "DDD": 45},
                               {"AAA": 60, "BBB": 95, "CCC": 20, "DDD": 130}), start=1):
        corr = _ok(md.post("/v1/ticks", json=_ticks(shock, day + timedelta(days=i))))["correlation_id"]
        recs = _wait_chain(audit, corr, {"PriceTicked", "DriftDetected", "RebalanceProposed", "RebalanceDecided",
                                         "TradesApproved", "OrdersUnfilled"}, {"REJ-1"})
        [pid] = {r["envelope"]["payload"]["proposal_id"] for r in recs
                 if r["envelope"]["event_type"] == "OrdersUnfilled"}
        approved.append(pid)
        deadline = time.monotonic() + 30
        while _ok(opt.get(f"/v1/proposals/{pid}"))["state"] != "unfilled" and time.monotonic() < deadline:
            time.sleep(0.3)
        body = _ok(opt.get(f"/v1/proposals/{pid}"))
        assert body["state"] == "unfilled" and body["fills"] == [], body
        assert {u["status"] for u in body["unfilled"]} == {"rejected"}
        deadline = time.monotonic() + 30
        while _ok(dm.get("/v1/accounts/REJ-1"))["drift_state"] != "armed" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _ok(dm.get("/v1/accounts/REJ-1"))["drift_state"] == "armed"
    assert len(set(approved)) == 2
    assert _ok(audit.post("/v1/audit/verify"))["ok"] is True
