"""drift-monitor policies, cash-flow triggers, bulk import/export and the engine's rebuild, against
real PostgreSQL and Kafka: relative bands with ESG exclusions fire with the right snapshot; a
deposit fires `cash_excess` at once; a withdrawal request fires `withdrawal` and raises the
reserve the optimizer sees; the minimum interval holds a band back; CSV / JSON Lines imports
keep good rows and report bad ones; export reads back; a rebuild from the database equals the
incrementally synced engine."""

from __future__ import annotations

import uuid
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.integration.drift_monitor.test_drift_monitor import (
    T0,
    TradesExecuted,
    account_body,
    make_model,
    processed,
    send,
    svc,  # noqa: F401  (module fixture: one service for this module too)
    tenant,
    tick,
)
from tests.support import auth, read_events
from trimtab.drift_monitor.cache import BookCache
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import DriftDetected, Fill

pytestmark = pytest.mark.integration
D = Decimal


async def drift_events(app, t: str) -> list[Envelope]:  # type: ignore[no-untyped-def]
    """DriftDetected envelopes of tenant t, from the outbox (committed with the state change)."""
    rt = app.state.runtime
    o = rt.infra.outbox
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(o.c.envelope).where(o.c.topic == "portfolio.drift.v1", o.c.tenant_id == t)
                                .order_by(o.c.id))).scalars().all()
    return [Envelope.from_bytes(r) for r in rows]


async def count_drifts(app, t: str) -> int:  # type: ignore[no-untyped-def]
    rt = app.state.runtime
    o = rt.infra.outbox
    async with rt.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(o).where(
            o.c.topic == "portfolio.drift.v1", o.c.tenant_id == t))).scalar_one()


async def test_relative_band_esg_cash_flow_withdrawal_interval_and_household(svc, kafka_bootstrap):  # noqa: F811
    app, client, producer = svc
    t = tenant()
    h = auth(t)
    r = await client.post("/v1/models", headers=h, json={
        "model_id": "rel", "name": "Relative", "targets": {"AAA": "0.5", "BBB": "0.3", "CCC": "0.1"},
        "policy": {"band_abs": None, "band_rel": "0.2", "cash_trigger_usd": "400"}})
    assert r.status_code == 201 and r.json()["policy"] == {"band_abs": None, "band_rel": "0.2", "cash_trigger_usd": "400"}
    # CCC is ESG-excluded: its 0.1 goes pro rata to AAA / BBB (0.5625 / 0.3375)
    body = account_body("R1", model_id="rel", esg_excluded=["CCC"], restricted=[])
    body["policy"] = {}
    assert (await client.post("/v1/accounts", headers=h, json=body)).status_code == 201
    acc = (await client.get("/v1/accounts/R1", headers=h)).json()
    assert acc["targets"] == {"AAA": "0.5625000000", "BBB": "0.3375000000"}
    assert acc["policy"]["band_rule"] == "relative_band" and acc["policy"]["band_abs"] is None
    # second account in the household, interval-bound: fills a moment ago, 30 days minimum
    b2 = account_body("R2", model_id="rel", restricted=[])
    b2["policy"] = {"min_interval_days": 30}
    assert (await client.post("/v1/accounts", headers=h, json=b2)).status_code == 201
    fx = Envelope.new(TradesExecuted(execution_id=f"EX-{uuid.uuid4().hex[:6]}", account_id="R2", fills=[
        Fill(client_order_id="o-1", symbol="BBB", side="buy", shares=D(1), price_usd=D(10), executed_at=T0)]),
        producer="oms", tenant_id=t)
    await send(producer, fx, "R2")
    await processed(app, fx)

    # 50 AAA, 30 BBB, 200 cash. At 10 / 10: 1000, AAA 0.5 (band 0.1125), BBB 0.3 (band 0.0675): in band.
    await tick(app, producer, t, "AAA", "10", 0)
    await tick(app, producer, t, "BBB", "10", 0)
    await tick(app, producer, t, "CCC", "10", 0)
    view = (await client.get("/v1/accounts/R1/drift", headers=h)).json()
    assert view["rule"] is None and view["bands"] == {"AAA": "0.1125000000", "BBB": "0.0675000000"}
    assert await count_drifts(app, t) == 0

    # AAA to 16: 800 + 300 + 200 = 1300: AAA 0.615 (+0.053, inside 0.1125), BBB 0.2308 (-0.1067 > 0.0675)
    up = await tick(app, producer, t, "AAA", "16", 1)
    evs = await read_events(kafka_bootstrap, "portfolio.drift.v1", until=lambda es: any(
        e.tenant_id == t for e in es))
    mine = [e.parse(DriftDetected) for e in evs if e.tenant_id == t]
    assert [d.account_id for d in mine] == ["R1"]  # R2 is held back by its minimum interval
    d = mine[0]
    assert d.rule == "relative_band" and d.breached == ["BBB"]
    assert d.snapshot.targets == {"AAA": D("0.5625"), "BBB": D("0.3375")}
    assert d.snapshot.policy.band_abs == D("0.0675")  # narrowest relative band, for the optimizer
    # ... and each symbol's own band where it is wider: AAA 20 % of 0.5625
    assert d.snapshot.policy.band_by_symbol == {"AAA": D("0.1125")}
    assert [e.correlation_id for e in evs if e.tenant_id == t] == [up.correlation_id]
    r2 = (await client.get("/v1/accounts/R2/drift", headers=h)).json()
    assert r2["rules"] == ["relative_band"] and not r2["would_fire"]
    assert "minimum interval of 30" in r2["held_back_by"]

    hh = (await client.get("/v1/households/HH1/drift", headers=h)).json()
    assert [a["account_id"] for a in hh["accounts"]] == ["R1", "R2"] and hh["firing"] == []
    assert D(hh["total_value_usd"]) == D("2600.00")  # R2 bought 1 BBB @ 10 with its cash: also 1300
    # value-weighted: CCC is R2's 0.1 target (R1 excludes it) over half the household's value
    assert set(hh["weights"]) == {"AAA", "BBB", "CCC"} and D(hh["targets"]["CCC"]) == D("0.05")

    # A deposit into a third account fires cash_excess at once (no tick needed).
    b3 = account_body("R3", model_id="rel", restricted=[], household_id="HH3")
    b3["lots"] = [{"lot_id": "L1", "symbol": "AAA", "shares": "45", "cost_basis_usd_per_share": "9",
                   "acquired_on": "2020-01-02"},
                  {"lot_id": "L3", "symbol": "BBB", "shares": "48", "cost_basis_usd_per_share": "9",
                   "acquired_on": "2021-03-04"},
                  {"lot_id": "L4", "symbol": "CCC", "shares": "13", "cost_basis_usd_per_share": "9",
                   "acquired_on": "2021-03-04"}]
    b3["cash_usd"] = "200"
    b3["policy"] = {"band_abs": "0.5", "band_rel": None}  # wide: only cash rules matter here
    assert (await client.post("/v1/accounts", headers=h, json=b3)).status_code == 201
    assert (await client.get("/v1/accounts/R3/drift", headers=h)).json()["rules"] == []
    dep = await client.post("/v1/accounts/R3/cash-flows", headers=h, json={"amount_usd": "1000", "note": "bonus"})
    assert dep.status_code == 200 and D(dep.json()["cash_usd"]) == D(1200)
    assert dep.json()["drift_state"] == "pending"
    evs = [e.parse(DriftDetected) for e in await drift_events(app, t)]
    assert [(x.account_id, x.rule) for x in evs] == [("R1", "relative_band"), ("R3", "cash_excess")]
    assert (await client.post("/v1/accounts/R3/cash-flows", headers=h, json={"amount_usd": "-5000"})).status_code == 422

    # A withdrawal request on a fourth account (cash 200, reserve 50): 400 more than it holds.
    b4 = dict(b3, account_id="R4", cash_usd="200")
    b4["policy"] = {"band_abs": "0.5", "band_rel": None, "cash_trigger_usd": None}
    assert (await client.post("/v1/accounts", headers=h, json=b4)).status_code == 201
    w = await client.post("/v1/accounts/R4/withdrawals", headers=h, json={"amount_usd": "400", "due_on": "2030-01-31"})
    assert w.status_code == 201, w.text
    evs = [e.parse(DriftDetected) for e in await drift_events(app, t)]
    last = evs[-1]
    assert (last.account_id, last.rule) == ("R4", "withdrawal")
    assert last.snapshot.cash_reserve_usd == D(450)  # reserve 50 + the withdrawal 400
    view = (await client.get("/v1/accounts/R4/drift", headers=h)).json()
    assert D(view["withdrawal_shortfall_usd"]) == D(250) and view["held_back_by"] == "drift_state pending"
    wid = w.json()["withdrawal_id"]
    assert (await client.post(f"/v1/accounts/R4/withdrawals/{wid}/paid", headers=h)).status_code == 422  # not covered
    c = await client.post(f"/v1/accounts/R4/withdrawals/{wid}/cancelled", headers=h)
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    assert (await client.get("/v1/accounts/R4", headers=h)).json()["open_withdrawals_usd"] == "0"
    assert (await client.get("/v1/accounts/R4/withdrawals", headers=auth(tenant()))).status_code == 404

    # Restart: a rebuild from the database holds the same state as the incrementally synced engine.
    cache: BookCache = app.state.book_cache
    rt = app.state.runtime
    async with rt.sessionmaker() as s:
        live = await cache.sync(s, t)
        fresh_cache = BookCache()
        fresh = await fresh_cache.rebuild(s, t)
    assert live.account_ids() == fresh.account_ids() == {"R1", "R2", "R3", "R4"}
    a, b = live.evaluate_all(), fresh.evaluate_all()
    ia = np.argsort([live._ids[i] for i in a.rows])
    ib = np.argsort([fresh._ids[i] for i in b.rows])
    for name in ("measurable", "band", "portfolio", "cash_excess", "withdrawal"):
        assert (getattr(a, name)[ia] == getattr(b, name)[ib]).all(), name
    assert np.allclose(live._value[a.rows][ia], fresh._value[b.rows][ib], rtol=1e-12)
    assert [live.revision(x) for x in sorted(live.account_ids())] == [fresh.revision(x) for x in sorted(live.account_ids())]


CSV_MODELS = """model_id,name,symbol,weight,policy.band_abs,policy.portfolio_band
core,Core,AAA,0.6,0.04,0.1
core,Core,BBB,0.3,,
bad,Bad,AAA,0.7,,
bad,Bad,BBB,oops,,
"""

CSV_ACCOUNTS = """account_id,household_id,account_type,model_id,cash_usd,cash_reserve_usd,restricted,never_buy,esg_excluded,custom_targets,tax_short_term,tax_long_term,policy.band_rel
I1,H1,taxable,core,100,0,,XYZ,,,0.3,0.15,0.25
I2,H1,roth,core,100,0,,,,,,,
I3,H1,tax_exempt,ghost,100,0,,,,,,,
I4,H2,tax_deferred,core,50.5,10,AAA,,,AAA:0.5;BBB:0.4,,,
I1,H1,taxable,core,100,0,,,,,,,
"""


async def test_csv_and_jsonl_import_export_round_trip(svc):  # noqa: F811
    _, client, _ = svc
    t, other = tenant(), tenant()
    h = auth(t)
    r = await client.post("/v1/import/models?format=csv", headers=h, content=CSV_MODELS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted_keys"] == ["core"]
    assert [(x["line"], x["key"]) for x in body["rejected"]] == [(4, "bad"), (5, "bad")]
    assert "weight" in body["rejected"][1]["errors"][0]
    core = (await client.get("/v1/models/core", headers=h)).json()
    assert core["targets"] == {"AAA": "0.6000000000", "BBB": "0.3000000000"} and core["policy"] == {"band_abs": "0.04", "portfolio_band": "0.1"}

    r = await client.post("/v1/import/accounts?format=csv", headers=h, content=CSV_ACCOUNTS)
    body = r.json()
    assert body["accepted_keys"] == ["I1", "I4"], body
    assert [(x["line"], x["key"]) for x in body["rejected"]] == [(3, "I2"), (4, "I3"), (6, "I1")]
    assert "account_type" in body["rejected"][0]["errors"][0]
    i1 = (await client.get("/v1/accounts/I1", headers=h)).json()
    assert i1["never_buy"] == ["XYZ"] and i1["policy"]["band_rule"] == "hybrid_band"
    assert i1["policy"]["band_abs"] == "0.04" and i1["policy"]["portfolio_band"] == "0.1"  # from the model
    assert i1["tax_rates"] == {"short_term": "0.3000", "long_term": "0.1500"}
    i4 = (await client.get("/v1/accounts/I4", headers=h)).json()
    assert i4["custom_targets"] == {"AAA": "0.5", "BBB": "0.4"} and i4["restricted"] == ["AAA"]

    lots_jsonl = "\n".join([
        '{"account_id":"I1","lot_id":"A1","symbol":"AAA","shares":"10","cost_basis_usd_per_share":"5","acquired_on":"2021-01-04"}',
        '{"account_id":"I1","lot_id":"A2","symbol":"BBB","shares":"-1","cost_basis_usd_per_share":"5","acquired_on":"2021-01-04"}',
        "not json",
        '{"account_id":"NOPE","lot_id":"A3","symbol":"AAA","shares":"1","cost_basis_usd_per_share":"5","acquired_on":"2021-01-04"}',
        '{"account_id":"I4","lot_id":"B1","symbol":"BBB","shares":"2.5","cost_basis_usd_per_share":"7.25","acquired_on":"2022-02-01"}',
        '{"account_id":"I1","lot_id":"A1","symbol":"AAA","shares":"1","cost_basis_usd_per_share":"5","acquired_on":"2021-01-04"}',
    ])
    r = await client.post("/v1/import/lots?format=jsonl", headers=h, content=lots_jsonl)
    body = r.json()
    assert body["accepted_keys"] == ["I1/A1", "I4/B1"]
    assert [x["line"] for x in body["rejected"]] == [2, 3, 4, 6]
    again = (await client.post("/v1/import/lots?format=jsonl", headers=h, content=lots_jsonl.splitlines()[0])).json()
    assert again["accepted"] == 0 and "already exists" in again["rejected"][0]["errors"][0]

    # Export, then import into another tenant: the same book comes back.
    for kind, fmt in (("models", "jsonl"), ("accounts", "csv"), ("lots", "csv")):
        ex = await client.get(f"/v1/export/{kind}?format={fmt}", headers=h)
        assert ex.status_code == 200
        imp = (await client.post(f"/v1/import/{kind}?format={fmt}", headers=auth(other), content=ex.text)).json()
        assert imp["rejected"] == [], (kind, imp)
    for path in ("/v1/accounts/I1", "/v1/accounts/I4", "/v1/models/core"):
        mine, theirs = (await client.get(path, headers=h)).json(), (await client.get(path, headers=auth(other))).json()
        for k in ("updated_at", "revision"):
            mine.pop(k, None)
            theirs.pop(k, None)
        assert mine == theirs, path
    assert (await client.get("/v1/export/lots?format=csv", headers=auth(other))).text == \
        (await client.get("/v1/export/lots?format=csv", headers=h)).text
    assert (await client.get("/v1/export/accounts", headers=auth(tenant()))).text.count("\n") == 1  # header only
    assert (await client.post("/v1/import/lots?format=csv", headers=auth(t, scopes=["book:read"]),
                              content="x")).status_code == 403


async def test_price_ticks_after_an_import_use_the_change_feed(svc):  # noqa: F811
    """Rows written after the engine's last sync (API, another replica) reach the next tick."""
    app, client, producer = svc
    t = tenant()
    h = auth(t)
    await make_model(client, t)
    assert (await client.post("/v1/accounts", headers=h, json=account_body("C1"))).status_code == 201
    await tick(app, producer, t, "AAA", "10", 0)
    await tick(app, producer, t, "BBB", "10", 0)
    cache: BookCache = app.state.book_cache
    rebuilds = cache.stats.rebuilds
    # a second account after the engine was built: picked up by the xid floor, not a rebuild
    assert (await client.post("/v1/accounts", headers=h, json=account_body("C2"))).status_code == 201
    await tick(app, producer, t, "AAA", "14", 2)
    assert sorted(e.parse(DriftDetected).account_id for e in await drift_events(app, t)) == ["C1", "C2"]
    assert cache.stats.rebuilds == rebuilds and cache.engine(t).account_ids() == {"C1", "C2"}


async def test_an_import_row_that_would_be_dropped_silently_is_refused(svc):  # noqa: F811
    """A model row with a weight but neither a symbol nor a sleeve would have been dropped (its
    40 % silently cash): the model is refused, naming the line. A custom target listed twice for
    one symbol would have kept the last: the account is refused."""
    _, client, _ = svc
    t = tenant()
    h = auth(t)
    models = "model_id,name,symbol,weight,sleeve\ncore,Core,AAA,0.5,\ncore,Core,,0.4,\nok,Ok,AAA,0.9,\n"
    body = (await client.post("/v1/import/models?format=csv", headers=h, content=models)).json()
    assert body["accepted_keys"] == ["ok"], body
    assert [(x["line"], x["key"]) for x in body["rejected"]] == [(2, "core"), (3, "core")]
    assert "line 3: a weight without a symbol or a sleeve" in body["rejected"][0]["errors"][0]
    assert (await client.get("/v1/models/core", headers=h)).status_code == 404
    accounts = ("account_id,model_id,cash_usd,custom_targets\n"
                "D1,ok,100,AAA:0.3;AAA:0.2\nD2,ok,100,AAA:0.3;BBB:0.2\n")
    body = (await client.post("/v1/import/accounts?format=csv", headers=h, content=accounts)).json()
    assert body["accepted_keys"] == ["D2"], body
    assert [(x["line"], x["key"]) for x in body["rejected"]] == [(2, "D1")]
