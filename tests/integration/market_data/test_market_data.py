"""market-data against real PostgreSQL and Kafka: ticks in, events out, bad input refused."""

from __future__ import annotations

import pytest

from tests.support import auth, read_events, running, settings
from trimtab.market_data.app import Settings, create
from trimtab.shared.events import PriceTicked

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap))
    async with running(app) as c:
        yield c


async def test_ticks_are_stored_and_published_with_one_correlation_id(client, kafka_bootstrap):
    r = await client.post("/v1/securities", headers=auth(), json=[
        {"symbol": "AAA", "name": "Triple A", "asset_class": "us_equity"},
        {"symbol": "BBB", "name": "Triple B", "asset_class": "us_equity"}])
    assert r.status_code == 200, r.text
    r = await client.post("/v1/ticks", headers=auth(), json={"ticks": [
        {"symbol": "AAA", "price_usd": "101.25", "as_of": "2024-01-02T21:00:00Z"},
        {"symbol": "BBB", "price_usd": "55.5", "as_of": "2024-01-02T21:00:00Z"}]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    ids = set(body["event_ids"])
    events = await read_events(kafka_bootstrap, "market.ticks.v1",
                               until=lambda evs: ids <= {str(e.event_id) for e in evs})
    mine = [e for e in events if str(e.event_id) in ids]
    assert {str(e.correlation_id) for e in mine} == {body["correlation_id"]}
    prices = {e.parse(PriceTicked).symbol: str(e.parse(PriceTicked).price_usd) for e in mine}
    assert prices == {"AAA": "101.250000", "BBB": "55.500000"} or prices == {"AAA": "101.25", "BBB": "55.5"}
    r = await client.get("/v1/prices/latest", headers=auth(), params={"symbols": ["AAA"]})
    assert r.json()[0]["price_usd"].startswith("101.25")


async def test_stale_tick_is_kept_but_not_republished(client):
    await client.post("/v1/securities", headers=auth(), json=[
        {"symbol": "CCC", "name": "C", "asset_class": "us_equity"}])
    r1 = await client.post("/v1/ticks", headers=auth(), json={"ticks": [
        {"symbol": "CCC", "price_usd": "10", "as_of": "2024-01-03T21:00:00Z"}]})
    r2 = await client.post("/v1/ticks", headers=auth(), json={"ticks": [
        {"symbol": "CCC", "price_usd": "9", "as_of": "2024-01-02T21:00:00Z"}]})
    assert r1.json()["accepted"] == 1
    assert r2.json() | {"correlation_id": None, "event_ids": []} == {
        "accepted": 0, "stale_ignored": 1, "correlation_id": None, "event_ids": []}


async def test_invalid_ticks_get_problem_json_and_store_nothing(client):
    bad = await client.post("/v1/ticks", headers=auth(), json={"ticks": [
        {"symbol": "AAA", "price_usd": "-1", "as_of": "2024-01-02T21:00:00Z"}]})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["status"] == 422 and bad.json()["errors"]
    unknown = await client.post("/v1/ticks", headers=auth(), json={"ticks": [
        {"symbol": "ZZZZ", "price_usd": "1", "as_of": "2024-01-02T21:00:00Z"}]})
    assert unknown.status_code == 422 and "ZZZZ" in unknown.json()["detail"]
    naive = await client.post("/v1/ticks", headers=auth(), json={"ticks": [
        {"symbol": "AAA", "price_usd": "1", "as_of": "2024-01-02T21:00:00"}]})
    assert naive.status_code == 422


async def test_auth_and_tenant_isolation(client):
    assert (await client.get("/v1/securities")).status_code == 401
    r = await client.get("/v1/securities", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert (await client.post("/v1/ticks", headers=auth(scopes=["market:read"]), json={"ticks": []})).status_code == 403
    await client.post("/v1/securities", headers=auth("t1"), json=[
        {"symbol": "DDD", "name": "D", "asset_class": "us_equity"}])
    assert (await client.get("/v1/securities/DDD", headers=auth("t1"))).status_code == 200
    assert (await client.get("/v1/securities/DDD", headers=auth("t2"))).status_code == 404


async def test_health_and_readiness(client):
    assert (await client.get("/livez")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["database"] == "ok" and r.json()["checks"]["kafka"] == "ok"
    m = await client.get("/metrics")
    assert m.status_code == 200
