"""risk against real PostgreSQL and Kafka: ticks build the model, a proposal is assessed and
alerted once, a restart rebuilds the same model, the API is tenant-scoped."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from tests.support import auth, read_events, running, settings, wait_consumers_assigned
from trimtab.risk.app import Settings, create
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    AccountSnapshot,
    PositionSnapshot,
    PriceTicked,
    RebalanceProposed,
    RiskAlerted,
    RiskAssessed,
    SecuritySnapshot,
    SolverInfo,
    topic_of,
)
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration

TENANT = f"risk-{uuid.uuid4().hex[:8]}"
OTHER = f"other-{uuid.uuid4().hex[:8]}"
DAYS = 12
D0 = date(2024, 3, 1)


def _settings(database_url, kafka_bootstrap):
    return settings(Settings, database_url, kafka_bootstrap, RISK_MIN_OBSERVATIONS=5)


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    app = create(_settings(database_url, kafka_bootstrap))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


async def produce(bootstrap: str, events: list[tuple[Envelope, str]]) -> None:
    producer = await start_producer(bootstrap, "risk-test")
    try:
        # queue everything, then wait: one round trip per batch, not per event; order per
        # partition is kept (aiokafka sends one batch per partition at a time)
        sent = [await producer.send(topic_of(env.event_type), env.to_bytes(), key=key.encode(),
                                    headers=encode_headers(kafka_headers(env)))
                for env, key in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _prices() -> dict[str, list[Decimal]]:
    rng = np.random.default_rng(11)
    out = {}
    for sym, vol in (("AAA", 0.01), ("BBB", 0.025)):
        path = 100 * np.exp(np.cumsum(rng.normal(0, vol, DAYS)))
        out[sym] = [Decimal(f"{p:.6f}") for p in path]
    return out


PRICES = _prices()


def _days() -> list[date]:
    days, d = [], D0
    while len(days) < DAYS:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def tick(sym: str, day: date, price: Decimal, tenant: str = TENANT) -> tuple[Envelope, str]:
    as_of = datetime(day.year, day.month, day.day, 21, tzinfo=UTC)
    return Envelope.new(PriceTicked(symbol=sym, price_usd=price, as_of=as_of, source="test"),
                        producer="market-data", tenant_id=tenant), sym


def proposal(pre: dict[str, str], post: dict[str, str], account: str, tenant: str = TENANT,
             proposal_id: uuid.UUID | None = None, *, cash_usd: str = "1000",
             holdings: dict[str, tuple[str, str]] | None = None, targets: dict[str, str] | None = None,
             est_cost_usd: str = "0", as_of: datetime | None = None) -> Envelope:
    """`holdings`: symbol -> (shares, price) in the snapshot; `as_of`: the snapshot's (now)."""
    holdings = holdings or {}
    snap = AccountSnapshot(
        account_id=account, cash_usd=Decimal(cash_usd),
        positions=[PositionSnapshot(symbol=s, shares=Decimal(q)) for s, (q, _) in holdings.items()],
        targets={k: Decimal(v) for k, v in (targets or {}).items()},
        securities=[SecuritySnapshot(symbol=s, price_usd=Decimal(px)) for s, (_, px) in holdings.items()],
        as_of=as_of or datetime.now(UTC))
    return Envelope.new(RebalanceProposed(
        proposal_id=proposal_id or uuid.uuid4(), account_id=account, snapshot=snap,
        snapshot_hash="sha256:test", orders=[],
        pre_weights={k: Decimal(v) for k, v in pre.items()},
        post_weights={k: Decimal(v) for k, v in post.items()}, objective={},
        est_cost_usd=Decimal(est_cost_usd), est_tax_usd=Decimal(0),
        solver=SolverInfo(solver="test", status="optimal", solve_ms=Decimal(1),
                          cvxpy_version="-", optimizer_version="-")),
        producer="optimizer", tenant_id=tenant)


async def wait_for(fn, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        out = await fn()
        if out is not None:
            return out
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def ticked(service, kafka_bootstrap):
    """DAYS days of closes of AAA and BBB for TENANT (and a little for OTHER), consumed."""
    _, client = service
    events = [tick(sym, day, PRICES[sym][k]) for k, day in enumerate(_days()) for sym in PRICES]
    events += [tick("ZZZ", day, Decimal(10 + k), OTHER) for k, day in enumerate(_days()[:4])]
    await produce(kafka_bootstrap, events)

    async def model_complete():  # type: ignore[no-untyped-def]
        body = (await client.get("/v1/risk-model", headers=auth(TENANT))).json()
        return body if body["observations"] == DAYS - 2 else None

    return await wait_for(model_complete)


def expected_daily_var(sym: str) -> float:
    """The RiskMetrics recursion by hand over the complete days (the last day is still open)."""
    logret = np.diff(np.log([float(p) for p in PRICES[sym][:-1]]))
    s = 0.0
    for r in logret:
        s = 0.94 * s + 0.06 * r * r
    return s / (1 - 0.94 ** len(logret))


async def test_ticks_build_the_model(ticked):
    body = ticked
    days = _days()
    assert body["window_start"] == str(days[1]) and body["window_end"] == str(days[-2])
    assert body["observations"] == DAYS - 2 and int(body["version"]) >= 1
    vols = {s["symbol"]: s for s in body["symbols"]}
    assert set(vols) == {"AAA", "BBB"}
    for sym in ("AAA", "BBB"):
        want = math.sqrt(expected_daily_var(sym) * 252) * 100
        assert float(vols[sym]["vol_annual_pct"]) == pytest.approx(want, abs=1e-4)
        assert vols[sym]["known"] is True


async def test_proposal_is_assessed_with_its_correlation_id_and_alerted(service, ticked, kafka_bootstrap):
    _, client = service
    account = f"acct-{uuid.uuid4().hex[:6]}"
    env = proposal({"AAA": "0.5", "CASH": "0.5"}, {"AAA": "0.2", "BBB": "0.4", "NEWCO": "0.3"}, account)
    await produce(kafka_bootstrap, [(env, account)])
    assessed = await read_events(kafka_bootstrap, "risk.assessed.v1",
                                 until=lambda evs: any(e.causation_id == env.event_id for e in evs))
    out = next(e for e in assessed if e.causation_id == env.event_id)
    assert out.correlation_id == env.correlation_id and out.tenant_id == TENANT
    assert out.producer == "risk"
    ra = out.parse(RiskAssessed)
    pre_want = 0.5 * math.sqrt(expected_daily_var("AAA") * 252) * 100
    assert float(ra.pre_vol_annual_pct) == pytest.approx(pre_want, abs=1e-4)
    assert ra.pre_vol_annual_pct.as_tuple().exponent == -4
    assert 5 < float(ra.post_vol_annual_pct) < 60
    assert ra.flags[0] == "prior_used:NEWCO" and "concentration" in ra.flags  # BBB at 40 %
    assert ra.model.observations == DAYS - 2 and ra.model.window_end == _days()[-2]
    alerts = await read_events(kafka_bootstrap, "risk.alerts.v1",
                               until=lambda evs: any(e.causation_id == env.event_id for e in evs))
    alert = next(e for e in alerts if e.causation_id == env.event_id).parse(RiskAlerted)
    assert alert.account_id == account and "BBB" in alert.message
    assert alert.values["max_post_weight"] == Decimal("0.4")

    r = await client.get(f"/v1/assessments/{ra.proposal_id}", headers=auth(TENANT, ["risk:read"]))
    assert r.status_code == 200, r.text
    assert r.json()["post_vol_annual_pct"] == format(ra.post_vol_annual_pct, "f")
    assert r.json()["flags"] == ra.flags and r.json()["correlation_id"] == str(env.correlation_id)
    assert (await client.get(f"/v1/assessments/{ra.proposal_id}", headers=auth(OTHER))).status_code == 404


async def test_a_redelivered_proposal_is_assessed_once(service, ticked, kafka_bootstrap):
    _, client = service
    account = f"acct-{uuid.uuid4().hex[:6]}"
    first = proposal({"AAA": "0.3"}, {"AAA": "0.6"}, account)  # 60 % in one name: an alert
    same_id_new_event = proposal({"AAA": "0.3"}, {"AAA": "0.6"}, account,
                                 proposal_id=first.parse(RebalanceProposed).proposal_id)
    marker = proposal({"AAA": "0.1"}, {"AAA": "0.1"}, account)
    # Same key: one partition, so the marker is handled after the duplicates.
    await produce(kafka_bootstrap, [(first, account), (first, account),
                                    (same_id_new_event, account), (marker, account)])
    pid = str(first.parse(RebalanceProposed).proposal_id)
    mid = str(marker.parse(RebalanceProposed).proposal_id)
    assessed = await read_events(kafka_bootstrap, "risk.assessed.v1",
                                 until=lambda evs: any(e.payload["proposal_id"] == mid for e in evs))
    assert sum(e.payload["proposal_id"] == pid for e in assessed) == 1
    # The relay publishes in outbox order: a second alert would precede the marker's event.
    alerts = await read_events(kafka_bootstrap, "risk.alerts.v1",
                               until=lambda evs: any(e.payload["account_id"] == account for e in evs))
    assert sum(e.payload["account_id"] == account for e in alerts) == 1
    assert (await client.get(f"/v1/assessments/{pid}", headers=auth(TENANT))).status_code == 200


async def test_what_if_and_its_input_rules(service, ticked):
    _, client = service
    r = await client.post("/v1/risk/what-if", headers=auth(TENANT, ["risk:read"]),
                          json={"weights": {"AAA": "0.5", "BBB": "0.25"}})
    assert r.status_code == 200, r.text
    body = r.json()
    # no prior used; AAA at 50 % is past the 35 % concentration limit, which what-if now flags
    assert body["cash_weight"] == "0.25" and body["flags"] == ["concentration"]
    assert 0 < float(body["vol_annual_pct"]) < 60
    only_aaa = (await client.post("/v1/risk/what-if", headers=auth(TENANT),
                                  json={"weights": {"AAA": "1"}})).json()
    assert float(only_aaa["vol_annual_pct"]) == pytest.approx(
        math.sqrt(expected_daily_var("AAA") * 252) * 100, abs=1e-4)
    # the other tenant's model knows none of TENANT's symbols: the prior, flagged
    other = (await client.post("/v1/risk/what-if", headers=auth(OTHER),
                               json={"weights": {"AAA": "1"}})).json()
    assert other["vol_annual_pct"] == "20.0000" and other["flags"] == ["prior_used:AAA", "concentration"]
    for bad in ({"AAA": "-0.1"}, {"AAA": "0.6", "BBB": "0.5"}):
        r = await client.post("/v1/risk/what-if", headers=auth(TENANT), json={"weights": bad})
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await client.post("/v1/risk/what-if", json={"weights": {"AAA": "1"}})).status_code == 401
    r = await client.get("/v1/risk-model", headers=auth(TENANT, ["market:read"]))
    assert r.status_code == 403


async def test_tenants_see_only_their_own_model(service, ticked):
    _, client = service
    other = await wait_for(lambda: _model_if(client, OTHER, 2))
    assert [s["symbol"] for s in other["symbols"]] == ["ZZZ"]
    assert (await client.get(f"/v1/assessments/{uuid.uuid4()}", headers=auth(TENANT))).status_code == 404


async def _model_if(client, tenant: str, observations: int):  # type: ignore[no-untyped-def]
    body = (await client.get("/v1/risk-model", headers=auth(tenant))).json()
    return body if body["observations"] == observations else None


async def test_a_restart_rebuilds_the_same_model(service, ticked, database_url, kafka_bootstrap):
    _, client = service
    before = (await client.get("/v1/risk-model", headers=auth(TENANT))).json()
    restarted = create(_settings(database_url, kafka_bootstrap))
    async with running(restarted) as fresh:
        # the model is rebuilt from the stored closes before any consumer starts
        after = (await fresh.get("/v1/risk-model", headers=auth(TENANT))).json()
    assert after == before
    assert after["digest"] and after["observations"] == DAYS - 2


async def test_a_fast_replay_of_real_prices_ends_in_the_batch_model(service, kafka_bootstrap):
    """120 days x 20 stocks of real 2019 closes, produced at once across partitions (so days
    arrive out of order between symbols): the model ends equal to the recursion over the panel."""
    from skfolio.datasets import load_sp500_dataset

    _, client = service
    tenant = f"replay-{uuid.uuid4().hex[:8]}"
    prices = load_sp500_dataset().loc["2019-01-01":].iloc[:120].round(6)
    events = [tick(str(sym), ts.date(), Decimal(f"{p:.6f}"), tenant)
              for ts, row in prices.iterrows() for sym, p in row.items()]
    t0 = time.monotonic()
    await produce(kafka_bootstrap, events)
    async def all_consumed():  # type: ignore[no-untyped-def]
        body = await _model_if(client, tenant, len(prices) - 2)
        done = body and all(x["observations"] == len(prices) - 2 for x in body["symbols"])
        return body if done and len(body["symbols"]) == 20 else None

    body = await wait_for(all_consumed, timeout_s=45)
    elapsed = time.monotonic() - t0
    logret = np.diff(np.log(prices.iloc[:-1].to_numpy()), axis=0)
    s = np.zeros((20, 20))
    for r in logret:
        s = 0.94 * s + 0.06 * np.outer(r, r)
    want = np.sqrt(np.diag(s) / (1 - 0.94 ** len(logret)) * 252) * 100
    got = {x["symbol"]: float(x["vol_annual_pct"]) for x in body["symbols"]}
    assert got == pytest.approx(dict(zip(prices.columns, want, strict=True)), abs=1e-4)
    assert elapsed < 40, f"{len(events)} ticks took {elapsed:.1f}s"


async def test_tolerance_flags_a_proposal_and_account_risk_reports_it(service, ticked, kafka_bootstrap):
    _, client = service
    account = f"acct-{uuid.uuid4().hex[:6]}"
    r = await client.put(f"/v1/accounts/{account}/risk-profile", headers=auth(TENANT, ["risk:read"]),
                         json={"tolerance_score": 5})
    assert r.status_code == 403  # setting a profile needs book:write
    r = await client.put(f"/v1/accounts/{account}/risk-profile", headers=auth(TENANT),
                         json={"tolerance_score": 5, "questionnaire": {"horizon_years": 3}})
    assert r.status_code == 200, r.text
    prof = r.json()
    assert prof["tolerance_downside_1y_pct"] == "5.0000"
    # the volatility at which a book reaches score 5: -ln(0.95) / 1.645
    assert float(prof["tolerance_vol_annual_pct"]) == pytest.approx(-math.log(0.95) / 1.6448536 * 100, abs=1e-3)
    assert (await client.get(f"/v1/accounts/{account}/risk-profile", headers=auth(OTHER))).status_code == 404

    env = proposal({"AAA": "0.1", "CASH": "0.9"}, {"AAA": "0.3", "BBB": "0.3"}, account)
    await produce(kafka_bootstrap, [(env, account)])
    assessed = await read_events(kafka_bootstrap, "risk.assessed.v1",
                                 until=lambda evs: any(e.causation_id == env.event_id for e in evs))
    ra = next(e for e in assessed if e.causation_id == env.event_id).parse(RiskAssessed)
    assert "above_tolerance" in ra.flags and ra.flags[-1] == "no_auto_approve"
    alerts = await read_events(kafka_bootstrap, "risk.alerts.v1",
                               until=lambda evs: any(e.causation_id == env.event_id for e in evs))
    alert = next(e for e in alerts if e.causation_id == env.event_id).parse(RiskAlerted)
    assert alert.values["tolerance_score"] == Decimal(5) and alert.values["post_score"] > 5
    assert "tolerance of 5" in alert.message

    r = await client.get(f"/v1/accounts/{account}/risk", headers=auth(TENANT))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["proposal_id"] == str(ra.proposal_id) and body["tolerance_score"] == 5
    assert body["flags"] == ra.flags
    assert body["proposed"]["vol_annual_pct"] == format(ra.post_vol_annual_pct, "f")
    assert body["current"]["score"] < body["proposed"]["score"] == alert.values["post_score"]
    assert (await client.get(f"/v1/accounts/{account}/risk", headers=auth(OTHER))).status_code == 404


async def test_what_if_reports_every_measure(service, ticked):
    _, client = service
    r = await client.post("/v1/risk/what-if", headers=auth(TENANT), json={
        "weights": {"AAA": "0.3", "BBB": "0.3"}, "target_weights": {"AAA": "0.3", "BBB": "0.3"},
        "account_value_usd": "1000000", "prices_usd": {"AAA": "100", "BBB": "50"},
        "adv_shares": {"AAA": "10000", "BBB": "2000"}, "tolerance_score": 99})
    assert r.status_code == 200, r.text
    body = r.json()
    m = body["measures"]
    vol = float(m["vol_annual_pct"]) / 100
    assert body["vol_annual_pct"] == m["vol_annual_pct"]
    # parametric VaR: z * daily sigma, square root of time for 10 days
    assert float(m["parametric_pct"]["var_95_1d"]) == pytest.approx(1.6448536 * vol / math.sqrt(252) * 100, abs=2e-4)
    assert float(m["parametric_pct"]["var_99_10d"]) == pytest.approx(
        2.3263479 * vol / math.sqrt(252) * math.sqrt(10) * 100, abs=2e-4)
    assert m["score"] == round(100 * (1 - math.exp(-1.6448536 * vol)))
    assert m["historical_pct"] == {} and m["historical_days"] < 60  # 10 days: too few to replay
    assert float(m["beta"]) == pytest.approx(1.0) and float(m["tracking_error_annual_pct"]) == 0
    # 300,000 USD of BBB at 50 is 6,000 shares; 20 % of 2,000 a day: 15 days (the slowest)
    assert m["liquidity_days"] == "15.00"
    assert m["concentration"]["herfindahl"] == "0.180000" and m["concentration"]["top5_weight"] == "0.600000"
    # every built-in scenario; AAA and BBB are not in the reference history: moved as the market
    assert len(body["stress"]) == 10
    covid = next(c for c in body["stress"] if c["scenario_id"] == "covid-2020")
    assert float(covid["pnl_pct"]) == pytest.approx(0.6 * -33.9, abs=0.3)


async def test_scenarios_and_stress(service, ticked):
    _, client = service
    listed = (await client.get("/v1/scenarios", headers=auth(TENANT))).json()
    assert [s["scenario_id"] for s in listed if s["builtin"]][:5] == [
        "dotcom-2000", "gfc-2008", "aug-2011", "covid-2020", "drawdown-2022"]
    lehman = {"scenario_id": f"lehman-{uuid.uuid4().hex[:4]}", "name": f"Lehman {uuid.uuid4().hex[:4]}",
              "kind": "historical", "start": "2008-09-12", "end": "2008-10-10"}
    r = await client.post("/v1/scenarios", headers=auth(TENANT, ["risk:read"]), json=lehman)
    assert r.status_code == 403
    assert (await client.post("/v1/scenarios", headers=auth(TENANT), json=lehman)).status_code == 201
    assert (await client.post("/v1/scenarios", headers=auth(TENANT), json=lehman)).status_code == 409
    oil = {"scenario_id": "oil-crash", "name": "Oil crash", "kind": "vector",
           "shocks": {"XOM": "-0.4", "CVX": "-0.4"}, "propagate": False}
    assert (await client.post("/v1/scenarios", headers=auth(TENANT), json=oil)).status_code == 201
    bad = {**lehman, "scenario_id": "too-old", "name": "x", "start": "1970-01-01", "end": "1971-01-01"}
    assert (await client.post("/v1/scenarios", headers=auth(TENANT), json=bad)).status_code == 422
    assert lehman["scenario_id"] not in {s["scenario_id"] for s in
                                         (await client.get("/v1/scenarios", headers=auth(OTHER))).json()}

    from skfolio.datasets import load_sp500_dataset

    px = load_sp500_dataset()
    r = await client.post("/v1/stress", headers=auth(TENANT), json={
        "scenario_ids": ["covid-2020", lehman["scenario_id"], "oil-crash"],
        "portfolios": [{"id": "p1", "weights": {"AAPL": "0.5", "XOM": "0.25"}},
                       {"id": "p2", "weights": {"KO": "1"}}]})
    assert r.status_code == 200, r.text
    body = r.json()
    p1, p2 = body["portfolios"]
    move = px.loc["2020-03-23"] / px.loc["2020-02-19"] - 1
    assert float(p1["pnl_pct"][0]) == pytest.approx(100 * (0.5 * move["AAPL"] + 0.25 * move["XOM"]), abs=1e-4)
    lm = px.loc["2008-10-10"] / px.loc["2008-09-12"] - 1
    assert float(p2["pnl_pct"][1]) == pytest.approx(100 * lm["KO"], abs=1e-4)
    assert p1["pnl_pct"][2] == "-10.0000" and p2["pnl_pct"][2] == "0.0000"
    assert body["windows"]["covid-2020"] == ["2020-02-19", "2020-03-23"]
    assert float(p1["worst_pct"][0]) >= -float(p1["pnl_pct"][0])
    r = await client.post("/v1/stress", headers=auth(TENANT), json={
        "scenario_ids": ["nope"], "portfolios": [{"id": "p", "weights": {"KO": "1"}}]})
    assert r.status_code == 422


async def test_risk_model_publishes_factors(service, ticked):
    _, client = service
    body = (await client.get("/v1/risk-model?garch=true", headers=auth(TENANT))).json()
    f = body["factors"]
    assert f["symbols"] == ["AAA", "BBB"] and f["model_version"] == body["version"]
    vols = {s["symbol"]: float(s["vol_annual_pct"]) / 100 for s in body["symbols"]}
    exp = np.array(f["exposures"])
    # factor form keeps each security's own variance: sum of squared exposures + specific
    var = (exp ** 2).sum(axis=0) + np.array(f["specific_var_daily"])
    np.testing.assert_allclose(np.sqrt(var * 252), [vols["AAA"], vols["BBB"]], atol=1e-6)  # 4-place pct
    assert body["garch"] == []  # ten returns: GARCH needs 250


async def test_the_assessed_event_carries_what_the_service_measured(service, ticked, kafka_bootstrap):
    """Scores against the tolerance, VaR/CVaR in % and USD, tracking error, concentration,
    breaches and limits on `risk.assessed.v1`: pre-trade by hand (one symbol), post-trade equal
    to the service's own what-if analytics and to the stored assessment's measures."""
    _, client = service
    account = f"acct-{uuid.uuid4().hex[:6]}"
    r = await client.put(f"/v1/accounts/{account}/risk-profile", headers=auth(TENANT),
                         json={"tolerance_score": 12})
    assert r.status_code == 200, r.text
    # 400 AAA at 100 + 60,000 cash = 100,000; the proposal costs 25.00: 99,975.00 after
    env = proposal({"AAA": "0.4", "CASH": "0.6"}, {"AAA": "0.3", "BBB": "0.4"}, account,
                   cash_usd="60000", holdings={"AAA": ("400", "100")},
                   targets={"AAA": "0.35", "BBB": "0.25"}, est_cost_usd="25.00")
    await produce(kafka_bootstrap, [(env, account)])
    assessed = await read_events(kafka_bootstrap, "risk.assessed.v1",
                                 until=lambda evs: any(e.causation_id == env.event_id for e in evs))
    out = next(e for e in assessed if e.causation_id == env.event_id)
    ra = out.parse(RiskAssessed)
    assert ra.pre_value_usd == Decimal("100000.00") and ra.post_value_usd == Decimal("99975.00")

    # before: 40 % of AAA, the RiskMetrics recursion by hand
    sd_pre = 0.4 * math.sqrt(expected_daily_var("AAA"))
    z95, pdf95 = 1.6448536269514722, math.exp(-1.6448536269514722 ** 2 / 2) / math.sqrt(2 * math.pi)
    assert ra.pre_score == max(1, round(100 * (1 - math.exp(-z95 * sd_pre * math.sqrt(252)))))
    assert float(ra.pre_var_95_1d_pct) == pytest.approx(100 * z95 * sd_pre, abs=5e-5)
    assert float(ra.pre_var_95_1d_usd) == pytest.approx(z95 * sd_pre * 100_000, abs=0.006)
    assert float(ra.pre_cvar_95_1d_usd) == pytest.approx(sd_pre * pdf95 / 0.05 * 100_000, abs=0.006)

    # after: the service's what-if of the same weights against the same targets
    r = await client.post("/v1/risk/what-if", headers=auth(TENANT), json={
        "weights": {"AAA": "0.3", "BBB": "0.4"}, "target_weights": {"AAA": "0.35", "BBB": "0.25"}})
    assert r.status_code == 200, r.text
    want = r.json()["measures"]
    assert ra.post_score == want["score"] and ra.post_vol_annual_pct == Decimal(want["vol_annual_pct"])
    assert ra.post_var_95_1d_pct == Decimal(want["parametric_pct"]["var_95_1d"])
    assert float(ra.post_var_95_1d_usd) == pytest.approx(
        float(want["parametric_pct"]["var_95_1d"]) / 100 * 99_975, abs=0.06)  # 4-place % x value
    assert float(ra.post_cvar_95_1d_usd) == pytest.approx(
        float(want["parametric_pct"]["cvar_95_1d"]) / 100 * 99_975, abs=0.06)
    assert ra.post_tracking_error_annual_pct == Decimal(want["tracking_error_annual_pct"])
    assert ra.post_largest_symbol == "BBB" and ra.post_largest_weight == Decimal("0.4")

    # against the tolerance: BBB at 40 % is over the 35 % limit, the score rises above 12
    assert ra.tolerance_score == 12 and ra.post_score > 12 >= 1
    assert "concentration" in ra.breaches and "above_tolerance" in ra.breaches
    assert ra.breaches == [f for f in ra.flags if f in
                           ("vol_increase", "concentration", "sector_concentration", "above_tolerance")]
    assert ra.limits == {"vol_increase_limit_pct": Decimal("2"), "concentration_limit": Decimal("0.35"),
                         "sector_limit": Decimal("0.5")}

    # the stored assessment (GET /v1/accounts/{id}/risk) says the same
    body = (await client.get(f"/v1/accounts/{account}/risk", headers=auth(TENANT))).json()
    assert body["proposal_id"] == str(ra.proposal_id)
    assert body["current"]["score"] == ra.pre_score and body["proposed"]["score"] == ra.post_score
    assert body["proposed"]["parametric_pct"]["var_95_1d"] == format(ra.post_var_95_1d_pct, "f")
    assert body["current"]["tracking_error_annual_pct"] == format(ra.pre_tracking_error_annual_pct, "f")


async def test_a_market_scenario_keyed_otherwise_is_refused(service, ticked):
    _, client = service
    r = await client.post("/v1/scenarios", headers=auth(TENANT), json={
        "scenario_id": "spx-down", "name": "SPX down", "kind": "market", "shocks": {"spx": "-0.1"}})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert 'keyed "market"' in r.json()["errors"][0]["msg"]


async def test_stress_weights_are_checked_like_a_what_ifs(service, ticked):
    _, client = service
    for weights in ({"KO": "1e400"}, {"KO": "-0.5"}, {"KO": "0.7", "PG": "0.4"}):
        r = await client.post("/v1/stress", headers=auth(TENANT), json={
            "scenario_ids": ["market-down-10"], "portfolios": [{"id": "p", "weights": weights}]})
        assert r.status_code == 422, (weights, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_stress_caps_distinct_symbols_and_runs_off_the_event_loop(service, ticked):
    _, client = service
    from trimtab.risk.analytics import MAX_SYMBOLS

    def book(n: int) -> list[dict]:  # type: ignore[type-arg]
        return [{"id": f"p{i}", "weights": {f"S{i}A": "0.5", f"S{i}B": "0.5"}} for i in range(n // 2)]

    r = await client.post("/v1/stress", headers=auth(TENANT), json={
        "scenario_ids": ["tech-down-30"], "portfolios": book(MAX_SYMBOLS + 2)})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert f"{MAX_SYMBOLS + 2} distinct symbols" in r.json()["detail"]
    assert str(MAX_SYMBOLS) in r.json()["detail"].replace(f"{MAX_SYMBOLS + 2}", "")

    # at the cap: an n x n eigendecomposition that takes a second or more, on a worker thread;
    # the event loop (consumers, /livez, /readyz) keeps answering meanwhile
    run = asyncio.create_task(client.post("/v1/stress", headers=auth(TENANT), json={
        "scenario_ids": ["tech-down-30"], "portfolios": book(MAX_SYMBOLS)}))
    t0, lags = time.perf_counter(), []
    while not run.done():
        t = time.perf_counter()
        assert (await client.get("/livez")).status_code == 200
        lags.append(time.perf_counter() - t)
        await asyncio.sleep(0.02)
    took = time.perf_counter() - t0
    r = run.result()
    assert r.status_code == 200, r.text
    assert len(r.json()["portfolios"]) == MAX_SYMBOLS // 2
    # blocked, the loop would answer once before the run and not again until it is over
    assert len(lags) >= 5, (lags, took)
    assert max(lags) < 0.25 * took, (max(lags), took)


async def test_a_stale_model_is_flagged_and_not_auto_approvable(service, ticked, kafka_bootstrap):
    from trimtab.optimizer.domain.lifecycle import blocking_flags

    days = _days()
    window_end = days[-2]  # the last complete day with returns
    fresh_day = window_end + timedelta(days=3)  # a few trading days later: still current
    stale_day = window_end + timedelta(days=40)  # weeks later
    envs = {}
    for name, day in (("fresh", fresh_day), ("stale", stale_day)):
        envs[name] = proposal({"AAA": "0.2", "BBB": "0.1"}, {"AAA": "0.2", "BBB": "0.1"},
                              f"acct-{name}-{uuid.uuid4().hex[:6]}",
                              as_of=datetime(day.year, day.month, day.day, 21, tzinfo=UTC))
    await produce(kafka_bootstrap, [(e, e.parse(RebalanceProposed).account_id) for e in envs.values()])
    ids = {e.event_id for e in envs.values()}
    assessed = await read_events(kafka_bootstrap, "risk.assessed.v1",
                                 until=lambda evs: ids <= {e.causation_id for e in evs})
    flags = {name: next(e for e in assessed if e.causation_id == env.event_id).parse(RiskAssessed).flags
             for name, env in envs.items()}
    assert flags["fresh"] == []
    assert flags["stale"] == ["stale_model", "no_auto_approve"]
    assert blocking_flags(flags["stale"])  # the optimizer's automatic approval stops on it
    alerts = await read_events(kafka_bootstrap, "risk.alerts.v1", until=lambda evs: True)
    assert not [e for e in alerts if e.causation_id in ids]  # a note, not a breach: no alert
