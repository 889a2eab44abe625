"""Bounds of market-data's input, without a database: tick times (time zone, a UTC value, not
before 1900, not beyond the clock-skew allowance) and security figures within their columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from trimtab.market_data.app import Settings
from trimtab.market_data.schemas import SecurityIn, TickIn
from trimtab.market_data.service import DEFAULT_MAX_FUTURE_S, Tick, future_ticks


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
                                   "1899-12-31T23:59:59Z", "2024-01-02T21:00:00"])
def test_tick_times_without_a_zone_or_a_utc_value_or_before_1900_are_refused(as_of):
    with pytest.raises(ValidationError) as e:
        TickIn(symbol="X1", price_usd=Decimal("1"), as_of=as_of)
    assert e.value.errors()[0]["loc"] == ("as_of",)


@pytest.mark.parametrize("as_of", ["1900-01-01T00:00:00Z", "9999-12-31T00:00:00Z", "2024-01-02T16:00:00-05:00"])
def test_representable_times_pass_the_schema(as_of):
    # the future is checked against the clock when the ticks are recorded, not by the schema
    assert TickIn(symbol="X1", price_usd=Decimal("1"), as_of=as_of).as_of.tzinfo is not None


def test_future_ticks_are_those_beyond_the_allowance():
    now = datetime(2024, 1, 2, 21, tzinfo=UTC)
    ticks = [Tick("A", Decimal(1), now + timedelta(seconds=s)) for s in (-86_400, 0, 300, 301, 10**9)]
    assert future_ticks(ticks, now, 300) == [3, 4]
    assert future_ticks(ticks, now, 0) == [2, 3, 4]


def test_the_allowance_is_a_setting():
    assert Settings().market_data_max_future_s == DEFAULT_MAX_FUTURE_S == 300
    assert Settings.model_validate({"MARKET_DATA_MAX_FUTURE_S": "5"}).market_data_max_future_s == 5
    with pytest.raises(ValidationError):
        Settings.model_validate({"MARKET_DATA_MAX_FUTURE_S": "-1"})


@pytest.mark.parametrize("field,value", [
    ("commission_usd_per_share", "99999"), ("commission_usd_per_share", "1E+5"),
    ("commission_usd_per_share", "9" * 4000), ("commission_usd_per_share", "1E-7"),
    ("half_spread_bps", "1.00001"), ("esg_score", "99.999"),
])
def test_security_figures_beyond_their_columns_are_refused(field, value):
    with pytest.raises(ValidationError) as e:
        SecurityIn(symbol="X1", name="x", asset_class="us_equity", **{field: value})
    assert e.value.errors()[0]["loc"] == (field,)


def test_security_figures_at_their_columns_limits_pass():
    s = SecurityIn(symbol="X1", name="x", asset_class="us_equity", commission_usd_per_share="9999.999999",
                   half_spread_bps="10000.0000", esg_score="100.00")
    assert s.commission_usd_per_share == Decimal("9999.999999")
