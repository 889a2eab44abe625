"""Which ticks of a batch market-data publishes (`service.ticks_to_publish`): every day of the
batch, the newest tick of each, in as_of order, none older than the stored latest price."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from trimtab.market_data.service import Tick, ticks_to_publish


def _t(sym: str, day: int, hour: int, px: str) -> Tick:
    return Tick(sym, Decimal(px), datetime(2024, 1, day, hour, tzinfo=UTC))


def test_a_multi_day_batch_publishes_each_day_in_order():
    # shuffled on purpose: days 2..4 of AAA (with an intraday tick on day 3), days 2..3 of BBB
    batch = [_t("AAA", 4, 21, "12"), _t("BBB", 3, 21, "51"), _t("AAA", 2, 21, "10"),
             _t("AAA", 3, 21, "11"), _t("AAA", 3, 15, "10.5"), _t("BBB", 2, 21, "50")]
    by_day, fresh = ticks_to_publish(batch, {})
    assert [(t.symbol, t.as_of.day, str(t.price_usd)) for t in fresh] == [
        ("AAA", 2, "10"), ("BBB", 2, "50"), ("AAA", 3, "11"), ("BBB", 3, "51"), ("AAA", 4, "12")]
    # history keeps the newest tick of each day, whatever the order in the batch
    assert by_day[("AAA", datetime(2024, 1, 3).date())].price_usd == Decimal("11")
    assert len(by_day) == 5


def test_ticks_older_than_the_stored_latest_are_not_published():
    latest = {"AAA": datetime(2024, 1, 3, 21, tzinfo=UTC)}
    batch = [_t("AAA", 2, 21, "10"), _t("AAA", 3, 21, "11"), _t("AAA", 4, 21, "12"),
             _t("BBB", 1, 21, "50")]
    _, fresh = ticks_to_publish(batch, latest)
    # day 2 is stale; day 3 at the stored time is re-published (as before); BBB is new
    assert [(t.symbol, t.as_of.day) for t in fresh] == [("BBB", 1), ("AAA", 3), ("AAA", 4)]


def test_equal_times_in_a_day_the_later_tick_of_the_batch_wins():
    _, fresh = ticks_to_publish([_t("AAA", 2, 21, "10"), _t("AAA", 2, 21, "10.1")], {})
    assert [str(t.price_usd) for t in fresh] == ["10.1"]

