"""Charts: named, rendered as real PNG and SVG, and byte-for-byte reproducible."""

from __future__ import annotations

import pytest

from trimtab.rebalance import explain, propose
from trimtab.rebalance.charts import ChartTrade, chart_names, chart_trades, render
from trimtab.rebalance.explain import EXPLAIN_DRIVERS

from .conftest import drifted_account


@pytest.fixture(scope="module")
def explained():  # type: ignore[no-untyped-def]
    return explain(propose(drifted_account(6, gains=True, reserve=2_000, restricted=["S01"], seed=3)),
                   drivers=EXPLAIN_DRIVERS)


def test_every_named_chart_renders_the_same_bytes_twice(explained) -> None:  # type: ignore[no-untyped-def]
    trades = chart_trades(explained)
    names = chart_names(trades)
    assert names[:2] == ["summary.svg", "summary.png"] and len(names) == 2 + 2 * len(trades)
    for name in (names[0], names[1], f"trade-{trades[0].symbol}.svg", f"trade-{trades[0].symbol}.png"):
        body, media_type = render(name, trades, explained.drivers, "title")
        again, _ = render(name, trades, explained.drivers, "title")
        assert body == again, name
        if name.endswith(".png"):
            assert media_type == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert media_type == "image/svg+xml" and b"<svg" in body
            assert b"<dc:date>" not in body  # no timestamp in the metadata


def test_the_numbers_change_the_chart(explained) -> None:  # type: ignore[no-untyped-def]
    t = chart_trades(explained)[0]
    other = ChartTrade(t.symbol, t.trade_usd + 1000.0,
                       {**t.contributions_usd, "drift": t.contributions_usd["drift"] + 1000.0})
    a, _ = render(f"trade-{t.symbol}.svg", [t], explained.drivers, "x")
    b, _ = render(f"trade-{t.symbol}.svg", [other], explained.drivers, "x")
    assert a != b


@pytest.mark.parametrize("name", ["summary.gif", "trade-NOPE.svg", "summary", "../summary.svg", "trade-.png"])
def test_unknown_names_are_refused(explained, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError):
        render(name, chart_trades(explained), explained.drivers, "x")
