"""market-data against real PostgreSQL and Kafka: ticks in, events out, bad input refused."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

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


def _tenant() -> str:
    return f"md-{uuid.uuid4().hex[:8]}"


async def test_a_batch_spanning_days_publishes_every_day_in_order(client, kafka_bootstrap):
    tenant = _tenant()
    await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": "MDA", "name": "A", "asset_class": "us_equity"},
        {"symbol": "MDB", "name": "B", "asset_class": "us_equity"}])
    r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": "MDB", "price_usd": "50", "as_of": "2024-01-05T21:00:00Z"}]})
    assert r.json()["accepted"] == 1
    # a catch-up: three days of MDA (day 3 twice: the close wins), and MDB older than it has
    r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": "MDA", "price_usd": "12", "as_of": "2024-01-04T21:00:00Z"},
        {"symbol": "MDA", "price_usd": "11", "as_of": "2024-01-03T21:00:00Z"},
        {"symbol": "MDA", "price_usd": "10.5", "as_of": "2024-01-03T15:00:00Z"},
        {"symbol": "MDA", "price_usd": "10", "as_of": "2024-01-02T21:00:00Z"},
        {"symbol": "MDB", "price_usd": "49", "as_of": "2024-01-04T21:00:00Z"}]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 3 and body["stale_ignored"] == 2
    ids = body["event_ids"]
    events = await read_events(kafka_bootstrap, "market.ticks.v1",
                               until=lambda evs: set(ids) <= {str(e.event_id) for e in evs})
    # Only this test's events: the topic holds every test's ticks, another producer's included.
    by_id = {str(e.event_id): e.parse(PriceTicked) for e in events if str(e.event_id) in ids}
    published = [(by_id[i].symbol, by_id[i].as_of.isoformat(), float(by_id[i].price_usd)) for i in ids]
    assert published == [("MDA", "2024-01-02T21:00:00+00:00", 10.0),
                         ("MDA", "2024-01-03T21:00:00+00:00", 11.0),
                         ("MDA", "2024-01-04T21:00:00+00:00", 12.0)]
    latest = (await client.get("/v1/prices/latest", headers=auth(tenant))).json()
    assert {p["symbol"]: float(p["price_usd"]) for p in latest} == {"MDA": 12.0, "MDB": 50.0}


async def test_a_batch_of_more_rows_than_one_statement_takes_is_stored(client):
    tenant = _tenant()
    # 7,000 symbols: 7,000 latest prices (5 bind parameters each) and 7,000 history rows
    symbols = [f"S{i:05d}" for i in range(7000)]
    for k in range(0, len(symbols), 1000):
        r = await client.post("/v1/securities", headers=auth(tenant), json=[
            {"symbol": s, "name": s, "asset_class": "us_equity"} for s in symbols[k:k + 1000]])
        assert r.status_code == 200, r.text
    r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": s, "price_usd": "10", "as_of": "2024-01-02T21:00:00Z"} for s in symbols]})
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 7000
    # 10,000 days of one symbol: 10,000 history rows (4 parameters each)
    await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": "LONG", "name": "L", "asset_class": "us_equity"}])
    d0 = date(1990, 1, 1)
    r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": "LONG", "price_usd": str(10 + i % 7), "as_of": f"{d0 + timedelta(days=i)}T21:00:00Z"}
        for i in range(10_000)]})
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 10_000 and r.json()["stale_ignored"] == 0
    last = (await client.get("/v1/prices/latest", headers=auth(tenant), params={"symbols": ["LONG"]})).json()
    assert last[0]["as_of"].startswith(str(d0 + timedelta(days=9999)))


async def test_securities_listed_twice_or_too_many_are_refused(client):
    tenant = _tenant()
    r = await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": "DUP", "name": "a", "asset_class": "us_equity"},
        {"symbol": "ONE", "name": "b", "asset_class": "us_equity"},
        {"symbol": "DUP", "name": "c", "asset_class": "us_equity"}])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "DUP" in r.text and "ONE" not in r.text
    assert (await client.get("/v1/securities", headers=auth(tenant))).json() == []
    r = await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": f"X{i}", "name": "x", "asset_class": "us_equity"} for i in range(1001)])
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_a_late_tick_of_a_day_does_not_replace_the_days_newer_price(client):
    """price_history keeps one price per day: the newest tick's. A tick of the same day that is
    older than the stored one (delivered late, in a later batch) changes nothing; a newer one
    replaces it."""
    from sqlalchemy import select

    from trimtab.market_data.models import price_history

    tenant = _tenant()
    await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": "LATE", "name": "L", "asset_class": "us_equity"}])

    async def day_price() -> float:
        sm = client._transport.app.state.runtime.sessionmaker  # type: ignore[attr-defined]
        async with sm() as s:
            return float((await s.execute(select(price_history.c.price_usd).where(
                price_history.c.tenant_id == tenant, price_history.c.symbol == "LATE"))).scalar_one())

    for price, at, expected in (("20", "2024-01-02T21:00:00Z", 20.0),   # the close
                                ("19", "2024-01-02T15:00:00Z", 20.0),   # a late intraday tick
                                ("21", "2024-01-02T21:30:00Z", 21.0)):  # a later correction
        r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
            {"symbol": "LATE", "price_usd": price, "as_of": at}]})
        assert r.status_code == 202, r.text
        assert await day_price() == expected, (price, at)
