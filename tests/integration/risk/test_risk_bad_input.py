"""Bad input to the risk API is a 4xx problem+json, never a 500; nothing is stored from it, and
what was stored before the rules existed (a limit rounded to 0, a +1e300 shock) stays readable
and cannot break the tenant's other requests."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from tests.support import auth, running, settings
from trimtab.risk import api, api_scenarios
from trimtab.risk.app import Settings, create
from trimtab.risk.models import risk_profiles, scenarios
from trimtab.shared.auth import Principal

pytestmark = pytest.mark.integration

TENANT = f"bad-{uuid.uuid4().hex[:8]}"
#: a tenant with scenarios stored before shocks were bounded
LEGACY = f"legacy-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap))
    async with running(app) as client:
        yield app, client


def problem(r, status: int = 422) -> dict:  # type: ignore[type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()  # type: ignore[no-any-return]


def account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ risk profiles


@pytest.mark.parametrize("limits", [
    {"concentration_limit": "0.00001"}, {"concentration_limit": "0.12345"},
    {"drawdown_limit_pct": "0.00001"}, {"drawdown_limit_pct": 5e-324},
    {"drawdown_limit_pct": "99.99999"}, {"concentration_limit": 1e-300},
])
async def test_a_limit_the_column_cannot_hold_is_refused_and_nothing_is_stored(service, limits):
    _, client = service
    acct = account()
    url = f"/v1/accounts/{acct}/risk-profile"
    problem(await client.put(url, headers=auth(TENANT), json={"tolerance_score": 50, **limits}))
    problem(await client.get(url, headers=auth(TENANT)), 404)
    good = {"tolerance_score": 40, "concentration_limit": "0.25", "drawdown_limit_pct": "12.5"}
    assert (await client.put(url, headers=auth(TENANT), json=good)).status_code == 200
    problem(await client.put(url, headers=auth(TENANT), json={"tolerance_score": 50, **limits}))
    r = await client.get(url, headers=auth(TENANT))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tolerance_score"], body["concentration_limit"], body["drawdown_limit_pct"]) == (
        40, "0.2500", "12.5000")


async def test_limits_the_column_holds_exactly_are_stored_exactly(service):
    _, client = service
    url = f"/v1/accounts/{account()}/risk-profile"
    r = await client.put(url, headers=auth(TENANT), json={
        "tolerance_score": 50, "concentration_limit": "0.12340000", "drawdown_limit_pct": "100"})
    assert r.status_code == 200, r.text
    got = (await client.get(url, headers=auth(TENANT))).json()
    assert got["concentration_limit"] == "0.1234" and got["drawdown_limit_pct"] == "100.0000"


async def test_a_profile_stored_before_the_places_were_checked_stays_readable(service):
    app, client = service
    acct = account()
    async with app.state.runtime.sessionmaker() as s, s.begin():
        # what PUT {"concentration_limit": "0.00001", "drawdown_limit_pct": "0.00001"} stored
        await s.execute(insert(risk_profiles).values(
            tenant_id=TENANT, account_id=acct, tolerance_score=50,
            concentration_limit=Decimal("0.0000"), drawdown_limit_pct=Decimal("0.0000"),
            questionnaire={"horizon_years": 3}, updated_by="someone"))
    url = f"/v1/accounts/{acct}/risk-profile"
    r = await client.get(url, headers=auth(TENANT))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["concentration_limit"] == "0.0000" and body["drawdown_limit_pct"] == "0.0000"
    assert body["questionnaire"] == {"horizon_years": 3} and body["updated_by"] == "someone"
    # and it can be set right
    r = await client.put(url, headers=auth(TENANT), json={"tolerance_score": 50,
                                                          "concentration_limit": "0.3"})
    assert r.status_code == 200 and r.json()["concentration_limit"] == "0.3000"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", '[1, {"x": NaN}]'])
async def test_a_questionnaire_json_cannot_store_is_refused(service, literal):
    _, client = service
    url = f"/v1/accounts/{account()}/risk-profile"
    raw = '{"tolerance_score": 50, "questionnaire": {"a": {"b": LITERAL}}}'.replace("LITERAL", literal)
    body = problem(await client.put(url, headers={**auth(TENANT), "content-type": "application/json"},
                                    content=raw))
    assert "finite" in str(body["errors"])
    problem(await client.get(url, headers=auth(TENANT)), 404)


@pytest.mark.parametrize("raw", [r'{"\ud800": 1}', r'{"a": ["\udc00"]}'])
async def test_text_without_a_utf8_form_is_refused_where_it_would_be_stored(service, raw):
    """An unpaired surrogate escape parses to a str PostgreSQL cannot take: questionnaires and
    shock keys are stored as JSONB."""
    _, client = service
    headers = {**auth(TENANT), "content-type": "application/json"}
    url = f"/v1/accounts/{account()}/risk-profile"
    problem(await client.put(url, headers=headers,
                             content='{"tolerance_score": 50, "questionnaire": RAW}'.replace("RAW", raw)))
    problem(await client.get(url, headers=auth(TENANT)), 404)
    sid = f"sur-{uuid.uuid4().hex[:6]}"
    problem(await client.post("/v1/scenarios", headers=headers, content=(
        '{"scenario_id": "SID", "name": "SID", "kind": "vector", "shocks": {"\\ud800": "-0.1"}}'
        .replace("SID", sid))))
    listed = (await client.get("/v1/scenarios", headers=auth(TENANT))).json()
    assert sid not in {s["scenario_id"] for s in listed}


async def test_account_ids_are_bounded_by_their_column(service):
    _, client = service
    long_id = "a" * 201
    for method, path in (("PUT", "risk-profile"), ("GET", "risk-profile"), ("GET", "risk"),
                         ("GET", "risk/attribution"), ("GET", "alerts")):
        r = await client.request(method, f"/v1/accounts/{long_id}/{path}", headers=auth(TENANT),
                                 json={"tolerance_score": 50} if method == "PUT" else None)
        problem(r)
    ok = "a" * 200
    r = await client.put(f"/v1/accounts/{ok}/risk-profile", headers=auth(TENANT),
                         json={"tolerance_score": 50})
    assert r.status_code == 200, r.text
    assert (await client.get(f"/v1/accounts/{ok}/risk-profile", headers=auth(TENANT))).json()[
        "account_id"] == ok


async def test_a_subject_longer_than_the_by_columns_is_recorded_cut_to_them(service):
    """The shared auth refuses such tokens; were one let through, the risk service stores what
    its String(200) columns hold instead of failing the insert."""
    app, client = service
    who = "s" * 250
    deps = [w.__metadata__[0].dependency for w in (api.Writer, api_scenarios.Writer)]
    for dep in deps:
        app.dependency_overrides[dep] = lambda: Principal(who, TENANT, frozenset({"book:write"}))
    try:
        acct = account()
        r = await client.put(f"/v1/accounts/{acct}/risk-profile", json={"tolerance_score": 20})
        assert r.status_code == 200, r.text
        assert r.json()["updated_by"] == who[:200]
        sid = f"who-{uuid.uuid4().hex[:6]}"
        r = await client.post("/v1/scenarios", json={"scenario_id": sid, "name": sid,
                                                      "kind": "market", "shocks": {"market": "-0.1"}})
        assert r.status_code == 201, r.text
    finally:
        for dep in deps:
            app.dependency_overrides.pop(dep, None)
    async with app.state.runtime.sessionmaker() as s:
        by = (await s.execute(select(scenarios.c.created_by).where(
            scenarios.c.tenant_id == TENANT, scenarios.c.scenario_id == sid))).scalar_one()
    assert by == who[:200]


# ------------------------------------------------------------------ scenarios and stress


@pytest.mark.parametrize(("kind", "shocks"), [
    ("market", {"market": "1e300"}), ("market", {"market": "123456789012345678901234567890"}),
    ("market", {"market": "10.5"}), ("market", {"market": 5e-324}),
    ("factor", {"market": "1e300"}), ("sector", {"Energy": "1e300"}),
    ("vector", {"AAPL": "-0.1234567"}), ("vector", {"AAPL": "-1.5"}),
])
async def test_a_shock_outside_the_scenario_range_is_refused(service, kind, shocks):
    _, client = service
    sid = f"huge-{uuid.uuid4().hex[:6]}"
    r = await client.post("/v1/scenarios", headers=auth(TENANT), json={
        "scenario_id": sid, "name": sid, "kind": kind, "shocks": shocks})
    body = problem(r)
    assert "from -1 (-100 %) to 10 (+1,000 %)" in body["errors"][0]["msg"]
    listed = (await client.get("/v1/scenarios", headers=auth(TENANT))).json()
    assert sid not in {s["scenario_id"] for s in listed}


async def test_shocks_at_the_bounds_are_kept_exactly(service):
    _, client = service
    sid = f"edge-{uuid.uuid4().hex[:6]}"
    r = await client.post("/v1/scenarios", headers=auth(TENANT), json={
        "scenario_id": sid, "name": sid, "kind": "vector",
        "shocks": {"AAPL": "10", "KO": "-1", "XOM": "-0.123456"}, "propagate": False})
    assert r.status_code == 201, r.text
    assert {k: Decimal(v) for k, v in r.json()["shocks"].items()} == {
        "AAPL": 10, "KO": -1, "XOM": Decimal("-0.123456")}
    r = await client.post("/v1/stress", headers=auth(TENANT), json={
        "scenario_ids": [sid], "portfolios": [{"id": "p", "weights": {"AAPL": "0.5", "XOM": "0.5"}}]})
    assert r.status_code == 200, r.text
    assert r.json()["portfolios"][0]["pnl_pct"] == ["493.8272"]


@pytest.fixture(scope="module")
async def legacy(service):
    """Rows as the API stored them before shocks were bounded (and a factor stored while the
    reference history, which names the factors, was unavailable)."""
    app, _ = service
    rows = {
        "h2": ("market", {"market": "1E+300"}),
        "f2": ("factor", {"market": "1E+300"}),
        "s2": ("sector", {"Energy": "123456789012345678901234567890"}),
        "v2": ("vector", {"AAPL": "1E+300"}),
        "fx": ("factor", {"NOSUCH": "-0.1"}),
        "fine": ("market", {"market": "-0.15"}),
    }
    async with app.state.runtime.sessionmaker() as s, s.begin():
        for sid, (kind, shocks) in rows.items():
            await s.execute(insert(scenarios).values(
                tenant_id=LEGACY, scenario_id=sid, name=f"N-{sid}", kind=kind,
                spec={"start": None, "end": None, "shocks": shocks, "propagate": True},
                description="", created_by="someone"))
    return rows


async def test_a_bad_stored_scenario_is_left_out_of_the_tenants_stress_runs(service, legacy):
    _, client = service
    r = await client.post("/v1/stress", headers=auth(LEGACY), json={
        "portfolios": [{"id": "p", "weights": {"AAPL": "0.5"}}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["skipped"]) == {"h2", "f2", "s2", "v2", "fx"}
    assert "NOSUCH" in body["skipped"]["fx"] and "from -1 to 10" in body["skipped"]["h2"]
    assert "fine" in body["scenario_ids"] and not set(body["skipped"]) & set(body["scenario_ids"])
    assert len(body["portfolios"][0]["pnl_pct"]) == len(body["scenario_ids"]) == 11
    assert body["portfolios"][0]["worst_scenario_id"] in body["scenario_ids"]
    # named explicitly, it is a 422 that says why
    for sid in legacy:
        if sid == "fine":
            continue
        r = await client.post("/v1/stress", headers=auth(LEGACY), json={
            "scenario_ids": ["fine", sid], "portfolios": [{"id": "p", "weights": {"AAPL": "0.5"}}]})
        assert sid in problem(r)["detail"]
        r = await client.post("/v1/risk/what-if", headers=auth(LEGACY), json={
            "weights": {"AAPL": "0.5"}, "scenario_ids": [sid]})
        assert sid in problem(r)["detail"]
    r = await client.post("/v1/risk/what-if", headers=auth(LEGACY), json={
        "weights": {"AAPL": "0.5"}, "scenario_ids": ["fine"]})
    assert r.status_code == 200, r.text
    assert r.json()["stress"][0]["scenario_id"] == "fine"
    # still listed, as stored, and marked
    listed = {s["scenario_id"]: s for s in (await client.get("/v1/scenarios", headers=auth(LEGACY))).json()}
    assert listed["h2"]["usable"] is False and "from -1 to 10" in listed["h2"]["problem"]
    assert Decimal(listed["h2"]["shocks"]["market"]) == Decimal("1e300")
    assert listed["fine"]["usable"] is True and listed["fine"]["problem"] is None


async def test_an_empty_scenario_list_is_refused_by_stress_and_means_none_in_a_what_if(service):
    _, client = service
    r = await client.post("/v1/stress", headers=auth(TENANT), json={
        "scenario_ids": [], "portfolios": [{"id": "p", "weights": {"AAPL": "0.5"}}]})
    problem(r)
    r = await client.post("/v1/risk/what-if", headers=auth(TENANT), json={
        "weights": {"AAPL": "0.5"}, "scenario_ids": []})
    assert r.status_code == 200 and r.json()["stress"] == []


# ------------------------------------------------------------------ what-if liquidity inputs


@pytest.mark.parametrize("extra", [
    {"account_value_usd": "1e400", "prices_usd": {"AAPL": "1e-400"}, "adv_shares": {"AAPL": "1e-300"}},
    {"account_value_usd": "1e13", "prices_usd": {"AAPL": "100"}, "adv_shares": {"AAPL": "1000"}},
    {"account_value_usd": "0.0000001", "prices_usd": {"AAPL": "100"}, "adv_shares": {"AAPL": "1000"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "0"}, "adv_shares": {"AAPL": "1000"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "-1"}, "adv_shares": {"AAPL": "1000"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "1e10"}, "adv_shares": {"AAPL": "1000"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "100"}, "adv_shares": {"AAPL": "0"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "100"}, "adv_shares": {"AAPL": "-5"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "100"}, "adv_shares": {"AAPL": "1e14"}},
    {"account_value_usd": "1000", "prices_usd": {"AAPL": "100"}, "adv_shares": {"AAPL": "1000"},
     "participation": "1e-400"},
])
async def test_what_if_liquidity_inputs_are_bounded(service, extra):
    _, client = service
    r = await client.post("/v1/risk/what-if", headers=auth(TENANT), json={
        "weights": {"AAPL": "0.5"}, "scenario_ids": [], **extra})
    problem(r)


async def test_what_if_at_the_liquidity_bounds_reports_a_number(service):
    _, client = service
    r = await client.post("/v1/risk/what-if", headers=auth(TENANT), json={
        "weights": {"AAPL": "0.5"}, "scenario_ids": [], "account_value_usd": "1e12",
        "prices_usd": {"AAPL": "0.000001"}, "adv_shares": {"AAPL": "0.000001"},
        "participation": "0.000001"})
    assert r.status_code == 200, r.text
    # 5e17 shares at 1e-12 a day
    assert Decimal(r.json()["measures"]["liquidity_days"]) == pytest.approx(Decimal("5e29"), rel=Decimal("1e-9"))
