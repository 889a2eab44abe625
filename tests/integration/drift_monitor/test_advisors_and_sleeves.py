"""drift-monitor advisors and sleeves against real PostgreSQL and Kafka: advisors per tenant
(isolation, unknown advisor 422 on accounts, households, bulk and CSV import), accounts listed by
advisor and paged with a cursor; a sleeve model's accounts drift against the expanded targets, a
change to a child model re-targets (and fires) the parent's accounts, cycles are refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.drift_monitor.test_drift_monitor import (
    account_body,
    make_model,
    processed,
    svc,  # noqa: F401  (module fixture: one service for this module)
    tenant,
    tick,
)
from tests.integration.drift_monitor.test_policies_and_import import drift_events
from tests.support import auth
from trimtab.drift_monitor.cache import BookCache
from trimtab.drift_monitor.domain.engine import DriftEngine
from trimtab.shared.events import DriftDetected

pytestmark = pytest.mark.integration
D = Decimal


async def test_advisors_tenant_isolation_unknown_advisor_and_paging(svc):  # noqa: F811
    app, client, _ = svc
    t, other = tenant(), tenant()
    h = auth(t)
    r = await client.post("/v1/advisors", headers=h, json={"advisor_id": "adv1", "name": "Ann", "email": "ann@firm.com"})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/advisors", headers=h, json={"advisor_id": "adv1", "name": "Ann B", "email": "ann@firm.com"})
    assert r.status_code == 200 and r.json()["name"] == "Ann B"
    assert (await client.post("/v1/advisors", headers=h, json={"advisor_id": "adv2", "name": "Bob",
                                                               "email": "bob@firm.com"})).status_code == 201
    assert (await client.post("/v1/advisors", headers=h, json={"advisor_id": "x", "name": "X",
                                                               "email": "not-an-email"})).status_code == 422
    assert [a["advisor_id"] for a in (await client.get("/v1/advisors", headers=h)).json()] == ["adv1", "adv2"]
    assert (await client.get("/v1/advisors/adv1", headers=h)).json()["email"] == "ann@firm.com"
    # Another firm sees none of them and cannot point its accounts at them.
    assert (await client.get("/v1/advisors", headers=auth(other))).json() == []
    assert (await client.get("/v1/advisors/adv1", headers=auth(other))).status_code == 404
    assert (await client.post("/v1/advisors", headers=auth(t, scopes=["book:read"]),
                              json={"advisor_id": "a3", "name": "C", "email": "c@f.io"})).status_code == 403

    await make_model(client, t)
    await make_model(client, other)
    r = await client.post("/v1/accounts", headers=h, json=account_body("A1", advisor_id="adv1"))
    assert r.status_code == 201 and r.json()["advisor_id"] == "adv1", r.text
    r = await client.post("/v1/accounts", headers=h, json=account_body("A2", advisor_id="nobody"))
    assert r.status_code == 422 and "unknown advisor" in r.text
    r = await client.post("/v1/accounts", headers=auth(other), json=account_body("A1", advisor_id="adv1"))
    assert r.status_code == 422  # adv1 is t's advisor, unknown to `other`
    assert (await client.get("/v1/accounts/A2", headers=h)).status_code == 404

    r = await client.post("/v1/households", headers=h, json={"household_id": "HH9", "advisor_id": "adv2"})
    assert r.status_code == 200 and r.json()["advisor_id"] == "adv2", r.text
    assert (await client.post("/v1/households", headers=h,
                              json={"household_id": "HH8", "advisor_id": "nobody"})).status_code == 422

    rows = [account_body(f"B{i}", advisor_id="adv2" if i % 2 else "adv1") for i in range(7)]
    rows.append(account_body("BX", advisor_id="ghost"))
    out = (await client.post("/v1/accounts/bulk", headers=h, json={"accounts": rows})).json()
    assert out["created"] == 7 and [(x["account_id"], x["errors"]) for x in out["rejected"]] == [
        ("BX", ["advisor_id: unknown advisor ghost"])]
    csv_text = "account_id,advisor_id,model_id,cash_usd\nC1,adv2,core,10\nC2,ghost,core,10\n"
    imp = (await client.post("/v1/import/accounts?format=csv", headers={**h, "content-type": "text/plain"},
                             content=csv_text)).json()
    assert imp["accepted_keys"] == ["C1"] and [x["line"] for x in imp["rejected"]] == [3]
    exported = (await client.get("/v1/export/accounts?format=csv", headers=h)).text
    assert "C1,,adv2,taxable,core" in exported

    listed = (await client.get("/v1/accounts", headers=h, params={"advisor_id": "adv2"})).json()
    assert [a["account_id"] for a in listed] == ["B1", "B3", "B5", "C1"]
    assert (await client.get("/v1/accounts", headers=auth(other), params={"advisor_id": "adv2"})).json() == []

    # Pages of 3 in account_id order, following the cursor to the end.
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        r = await client.get("/v1/accounts", headers=h, params=params)
        assert r.status_code == 200, r.text
        seen += [a["account_id"] for a in r.json()]
        pages += 1
        cursor = r.headers.get("X-Next-Cursor")
        if cursor is None:
            break
        assert 'rel="next"' in r.headers["Link"]
    assert seen == ["A1", *[f"B{i}" for i in range(7)], "C1"] and pages == 3
    assert (await client.get("/v1/accounts", headers=h, params={"cursor": "!!"})).status_code == 422
    assert (await client.get("/v1/accounts", headers=h, params={"limit": 0})).status_code == 422


async def test_sleeve_model_drifts_against_expanded_targets_and_retargets_on_child_change(svc):  # noqa: F811
    app, client, producer = svc
    t = tenant()
    h = auth(t)
    for mid, targets in (("eq", {"AAA": "1"}), ("bd", {"BBB": "1"})):
        assert (await client.post("/v1/models", headers=h, json={"model_id": mid, "name": mid,
                                                                  "targets": targets})).status_code == 201
    r = await client.post("/v1/models", headers=h, json={"model_id": "bal", "name": "Balanced",
                                                          "models": {"eq": "0.5", "bd": "0.3"}})
    assert r.status_code == 201, r.text
    assert r.json()["expanded_targets"] == {"AAA": "0.5000000000", "BBB": "0.3000000000"}
    assert r.json()["cash_target_weight"] == "0.2000000000"
    # Two levels: top holds bal as a sleeve; refused: unknown sleeves and cycles at any depth.
    assert (await client.post("/v1/models", headers=h, json={"model_id": "top", "name": "Top",
                                                              "models": {"bal": "1"}})).status_code == 201
    r = await client.post("/v1/models", headers=h, json={"model_id": "x", "name": "X", "models": {"nope": "0.5"}})
    assert r.status_code == 422 and "unknown sleeve" in r.text
    r = await client.post("/v1/models", headers=h, json={"model_id": "eq", "name": "eq", "models": {"top": "0.5"}})
    assert r.status_code == 422 and "cycle" in r.text, r.text
    assert (await client.get("/v1/models/eq", headers=h)).json()["models"] == {}  # nothing written

    # Weights 0.5 / 0.3 / cash 0.2 at prices 10: exactly on the expanded targets.
    assert (await client.post("/v1/advisors", headers=h, json={
        "advisor_id": "adv1", "name": "Ann", "email": "ann@firm.com"})).status_code == 201
    assert (await client.post("/v1/accounts", headers=h,
                              json=account_body("S1", model_id="bal", advisor_id="adv1"))).status_code == 201
    assert (await client.post("/v1/accounts", headers=h, json=account_body("S2", model_id="top"))).status_code == 201
    for sym in ("AAA", "BBB", "CCC"):
        await tick(app, producer, t, sym, "10", 0)
    view = (await client.get("/v1/accounts/S1/drift", headers=h)).json()
    assert view["targets"] == {"AAA": "0.5000000000", "BBB": "0.3000000000"} and view["rule"] is None
    assert await drift_events(app, t) == []
    rev = {a: (await client.get(f"/v1/accounts/{a}", headers=h)).json()["revision"] for a in ("S1", "S2")}

    # The grandchild bd changes: bal and top (and so S1 and S2) now target BBB 0.15, CCC 0.15.
    r = await client.post("/v1/models", headers=h, json={"model_id": "bd", "name": "bd",
                                                          "targets": {"BBB": "0.5", "CCC": "0.5"}})
    assert r.status_code == 200, r.text
    assert (await client.get("/v1/models/top", headers=h)).json()["expanded_targets"] == {
        "AAA": "0.5000000000", "BBB": "0.1500000000", "CCC": "0.1500000000"}
    for a in ("S1", "S2"):
        acc = (await client.get(f"/v1/accounts/{a}", headers=h)).json()
        assert acc["revision"] > rev[a] and acc["targets"] == {
            "AAA": "0.5000000000", "BBB": "0.1500000000", "CCC": "0.1500000000"}

    # The next tick of a held symbol syncs the engine, which sees the new targets and fires.
    env = await tick(app, producer, t, "AAA", "10", 1)
    await processed(app, env)
    evs = sorted((e.parse(DriftDetected) for e in await drift_events(app, t)), key=lambda d: d.account_id)
    assert [(d.account_id, d.rule) for d in evs] == [("S1", "absolute_band"), ("S2", "absolute_band")]
    # The drift names the account's advisor (the optimizer's queue for them); none for S2.
    assert [d.advisor_id for d in evs] == ["adv1", None]
    for d in evs:
        assert d.snapshot.targets == {"AAA": D("0.5"), "BBB": D("0.15"), "CCC": D("0.15")}
        assert sorted(d.breached) == ["BBB", "CCC"]

    # CSV import: a parent listed before its sleeve is imported after it; a cycle is rejected.
    csv_models = ("model_id,name,symbol,weight,sleeve\nmix,Mix,,0.5,inc\nmix,Mix,DDD,0.2,\n"
                  "inc,Income,EEE,0.9,\nloop,Loop,,0.5,top\n")
    imp = (await client.post("/v1/import/models?format=csv", headers={**h, "content-type": "text/plain"},
                             content=csv_models)).json()
    assert imp["accepted_keys"] == ["inc", "mix", "loop"], imp
    assert (await client.get("/v1/models/mix", headers=h)).json()["expanded_targets"] == {
        "DDD": "0.2000000000", "EEE": "0.4500000000"}
    bad = "model_id,name,symbol,weight,sleeve\ntop,Top,,0.5,loop\n"  # top -> loop -> top
    imp = (await client.post("/v1/import/models?format=csv", headers={**h, "content-type": "text/plain"},
                             content=bad)).json()
    assert imp["accepted"] == 0 and "cycle" in imp["rejected"][0]["errors"][0]
    exported = (await client.get("/v1/export/models?format=jsonl", headers=h)).text
    assert '"model_id":"mix","name":"Mix","targets":{"DDD":"0.2000000000"},"models":{"inc":"0.5000000000"}' in exported

    # A rebuild from the database (start-up) expands the sleeves the same way.
    fresh = BookCache()
    async with app.state.runtime.sessionmaker() as s:
        eng = await fresh.rebuild(s, t)
        await s.rollback()
    expected = {"AAA": 0.5, "BBB": 0.15, "CCC": 0.15}
    assert engine_targets(eng, "S1") == engine_targets(eng, "S2") == expected
    assert engine_targets(app.state.book_cache.engine(t), "S1") == expected


def engine_targets(eng: DriftEngine, account_id: str) -> dict[str, float]:
    """An account's targets as the engine holds them (its used slots)."""
    row = eng._row[account_id]
    lo = int(eng._start[row])
    return {eng._names[int(eng._ind[k])]: float(eng._tg[k]) for k in range(lo, lo + int(eng._cap[row]))
            if eng._ind[k] != 0 and eng._tg[k] > 0}
