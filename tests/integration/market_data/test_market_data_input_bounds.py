"""market-data refuses input it cannot store or that would corrupt what it stores: ticks dated in
the future (they would freeze the latest price) or outside the range of representable times, and
security figures beyond their columns' precision. Each is a 422 problem+json and changes nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.support import auth, running, settings
from trimtab.market_data.app import Settings, create
from trimtab.market_data.models import latest_prices, price_history, securities
from trimtab.market_data.service import Tick, record_ticks
from trimtab.shared.errors import Invalid

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


@pytest.fixture
async def client(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap))
    async with running(app) as c:
        yield c


def _tenant() -> str:
    return f"mdb-{uuid.uuid4().hex[:8]}"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def _security(client, tenant: str, symbol: str, **extra: str) -> None:
    r = await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": symbol, "name": symbol, "asset_class": "us_equity", **extra}])
    assert r.status_code == 200, r.text


async def _tick(client, tenant: str, symbol: str, price: str, as_of: str):  # type: ignore[no-untyped-def]
    return await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": symbol, "price_usd": price, "as_of": as_of}]})


async def _latest(client, tenant: str) -> list[dict[str, str]]:
    r = await client.get("/v1/prices/latest", headers=auth(tenant))
    assert r.status_code == 200, r.text
    return r.json()


async def _history(client, tenant: str) -> list[tuple[str, str, str]]:
    sm = client._transport.app.state.runtime.sessionmaker  # type: ignore[attr-defined]
    async with sm() as s:
        rows = (await s.execute(select(price_history).where(price_history.c.tenant_id == tenant)
                                .order_by(price_history.c.symbol, price_history.c.as_of))).all()
    return [(r.symbol, str(r.as_of), str(r.price_usd)) for r in rows]


def _problem(r, status: int = 422) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    return body


async def test_a_far_future_tick_is_refused_and_the_latest_price_keeps_moving(client):
    tenant = _tenant()
    await _security(client, tenant, "X1")
    assert (await _tick(client, tenant, "X1", "100", "2024-01-02T21:00:00Z")).status_code == 202
    before, hist_before = await _latest(client, tenant), await _history(client, tenant)

    r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": "X1", "price_usd": "100.5", "as_of": "2024-01-03T21:00:00Z"},
        {"symbol": "X1", "price_usd": "101", "as_of": "9999-12-31T00:00:00Z"}]})
    body = _problem(r)
    # the whole batch is refused, naming the tick, as for any other invalid tick
    assert [e["loc"] for e in body["errors"]] == [["body", "ticks", "1", "as_of"]]
    assert await _latest(client, tenant) == before
    assert await _history(client, tenant) == hist_before

    # the next real tick is a fresh price, not a stale one
    r = await _tick(client, tenant, "X1", "102", "2024-01-04T21:00:00Z")
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1 and r.json()["stale_ignored"] == 0
    [p] = await _latest(client, tenant)
    assert Decimal(p["price_usd"]) == Decimal("102") and p["as_of"].startswith("2024-01-04")


async def test_clock_skew_is_allowed_up_to_the_setting(client):
    tenant = _tenant()
    await _security(client, tenant, "SKEW")
    now = datetime.now(UTC)
    r = await _tick(client, tenant, "SKEW", "10", _iso(now + timedelta(seconds=60)))  # default 300 s
    assert r.status_code == 202, r.text
    before = await _latest(client, tenant)
    _problem(await _tick(client, tenant, "SKEW", "11", _iso(now + timedelta(seconds=900))))
    assert await _latest(client, tenant) == before


async def test_a_smaller_allowance_is_read_from_the_environment(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap, MARKET_DATA_MAX_FUTURE_S=0))
    async with running(app) as client:
        tenant = _tenant()
        await _security(client, tenant, "NOW")
        r = await _tick(client, tenant, "NOW", "10", _iso(datetime.now(UTC) + timedelta(seconds=60)))
        assert "MARKET_DATA_MAX_FUTURE_S" in _problem(r)["errors"][0]["msg"]
        assert await _latest(client, tenant) == []


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
                                   "0001-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "1900-01-01T09:00:00+10:00"])
async def test_ticks_outside_the_range_of_times_are_refused(client, as_of):
    tenant = _tenant()
    await _security(client, tenant, "OLD")
    assert (await _tick(client, tenant, "OLD", "5", "2024-01-02T21:00:00Z")).status_code == 202
    before, hist_before = await _latest(client, tenant), await _history(client, tenant)
    body = _problem(await _tick(client, tenant, "OLD", "6", as_of))
    assert body["errors"][0]["loc"] == ["body", "ticks", "0", "as_of"]
    assert await _latest(client, tenant) == before
    assert await _history(client, tenant) == hist_before


async def test_the_earliest_time_is_accepted(client):
    tenant = _tenant()
    await _security(client, tenant, "FIRST")
    r = await _tick(client, tenant, "FIRST", "5", "1900-01-01T00:00:00Z")
    assert r.status_code == 202, r.text


async def test_every_caller_of_record_ticks_is_held_to_the_same_bound(client):
    """Replays and any other producer of ticks go through record_ticks: it refuses the batch."""
    tenant = _tenant()
    await _security(client, tenant, "SVC")
    rt = client._transport.app.state.runtime  # type: ignore[attr-defined]
    ticks = [Tick("SVC", Decimal("1"), datetime(2024, 1, 2, 21, tzinfo=UTC)),
             Tick("SVC", Decimal("2"), datetime.now(UTC) + timedelta(days=1))]
    with pytest.raises(Invalid) as e:
        await record_ticks(rt, tenant, ticks, "import")
    assert e.value.extra["future_ticks"] == [1]
    assert await _latest(client, tenant) == [] and await _history(client, tenant) == []


@pytest.mark.parametrize("field,value", [
    ("commission_usd_per_share", "99999"), ("commission_usd_per_share", "1E+5"),
    ("commission_usd_per_share", "9" * 4000), ("commission_usd_per_share", "0.0000001"),
    ("half_spread_bps", "10000.0001"), ("half_spread_bps", "1.00005"),
    ("esg_score", "100.01"), ("esg_score", "50.005"), ("commission_usd_per_share", "NaN"),
])
async def test_security_figures_beyond_their_columns_are_refused(client, field, value):
    tenant = _tenant()
    await _security(client, tenant, "FEE", commission_usd_per_share="0.005", esg_score="70.5")
    r = await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": "FEE", "name": "changed", "asset_class": "us_equity", field: value}])
    body = _problem(r)
    assert body["errors"][0]["loc"][-1] == field
    sm = client._transport.app.state.runtime.sessionmaker  # type: ignore[attr-defined]
    async with sm() as s:
        row = (await s.execute(select(securities).where(securities.c.tenant_id == tenant))).one()
    assert (row.name, row.commission_usd_per_share, row.esg_score) == ("FEE", Decimal("0.005"), Decimal("70.5"))


async def test_the_largest_figures_the_columns_hold_are_stored(client):
    tenant = _tenant()
    r = await client.post("/v1/securities", headers=auth(tenant), json=[
        {"symbol": "MAX", "name": "max", "asset_class": "us_equity", "commission_usd_per_share": "9999.999999",
         "half_spread_bps": "10000.0000", "esg_score": "100.00"}])
    assert r.status_code == 200, r.text
    [s] = r.json()
    assert (s["commission_usd_per_share"], s["half_spread_bps"], s["esg_score"]) == (
        "9999.999999", "10000.0000", "100.00")


async def test_prices_beyond_their_column_are_refused(client):
    tenant = _tenant()
    await _security(client, tenant, "BIG")
    for price in ("1E+12", "1000000000000", "0.0000001"):
        _problem(await _tick(client, tenant, "BIG", price, "2024-01-02T21:00:00Z"))
    sm = client._transport.app.state.runtime.sessionmaker  # type: ignore[attr-defined]
    async with sm() as s:
        assert (await s.execute(select(latest_prices).where(latest_prices.c.tenant_id == tenant))).all() == []


async def test_a_future_latest_price_stored_before_the_check_is_replaced_by_the_next_real_tick(client):
    """A far-future latest price stored before ticks from the future were refused froze the symbol:
    every real tick was `stale_ignored`. It now counts as no latest price: the next real tick
    replaces it and is published."""
    from sqlalchemy import update

    tenant = _tenant()
    await _security(client, tenant, "FRZ")
    assert (await _tick(client, tenant, "FRZ", "100", "2024-01-02T21:00:00Z")).status_code == 202
    sm = client._transport.app.state.runtime.sessionmaker  # type: ignore[attr-defined]
    async with sm() as s, s.begin():  # what an unchecked 9999 tick left behind
        await s.execute(update(latest_prices).where(latest_prices.c.tenant_id == tenant)
                        .values(as_of=datetime(9999, 12, 31, tzinfo=UTC), price_usd=Decimal(101)))
    r = await _tick(client, tenant, "FRZ", "102", "2024-01-04T21:00:00Z")
    assert r.status_code == 202 and r.json()["accepted"] == 1 and r.json()["stale_ignored"] == 0, r.text
    [p] = await _latest(client, tenant)
    assert Decimal(p["price_usd"]) == Decimal("102") and p["as_of"].startswith("2024-01-04")


async def test_a_tick_above_the_price_bound_is_refused_whole(client):
    """At most MAX_PRICE_USD (10^7 USD) a share: the drift monitor sizes account values for it.
    Before, ticks up to 10^12 were accepted and one above about 10^8 overflowed the drift total
    of an account at the share bound. The whole batch is refused; the bound itself is accepted."""
    tenant = _tenant()
    await _security(client, tenant, "X3")
    assert (await _tick(client, tenant, "X3", "10000000", "2024-01-02T21:00:00Z")).status_code == 202
    before, hist_before = await _latest(client, tenant), await _history(client, tenant)
    r = await client.post("/v1/ticks", headers=auth(tenant), json={"ticks": [
        {"symbol": "X3", "price_usd": "100", "as_of": "2024-01-03T21:00:00Z"},
        {"symbol": "X3", "price_usd": "10000000.000001", "as_of": "2024-01-04T21:00:00Z"}]})
    body = _problem(r)
    assert "10000000" in json.dumps(body), body
    assert await _latest(client, tenant) == before
    assert await _history(client, tenant) == hist_before
