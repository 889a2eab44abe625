"""Early-warning decisions: the hysteresis state machine, drawdown from a running peak of the
watched portfolios, the volatility-regime ratio."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from trimtab.risk.domain.alerts import drawdown_pct, portfolio_vol_annual, step, vol_regime
from trimtab.risk.domain.watched import WatchedBook


def run(metrics: list[float], trigger: float = 10.0, h: float = 0.1) -> tuple[list[str], bool]:
    """Feed one account's metric day by day; the events it would emit."""
    active, out = np.zeros(1, dtype=bool), []
    for x in metrics:
        t = step(active, np.array([x]), trigger, h)
        out += ["fire"] * int(t.fired[0]) + ["clear"] * int(t.cleared[0])
        active = t.active
    return out, bool(active[0])


def test_fires_once_and_stays_quiet_while_the_condition_holds():
    assert run([5, 11, 12, 30, 10.5, 11]) == (["fire"], True)


def test_clears_only_below_the_clear_level_then_fires_again():
    # trigger 10, hysteresis 10 %: clears at 9 or below; 9.5 is inside the band and holds
    assert run([11, 9.5, 9.9, 9.0, 9.5, 10.01]) == (["fire", "clear", "fire"], True)
    assert run([11, 8, 12, 8]) == (["fire", "clear", "fire", "clear"], False)


def test_at_the_trigger_is_not_a_breach_and_unknown_holds_the_state():
    assert run([10.0, np.nan]) == ([], False)
    assert run([11, np.nan, np.nan, 12]) == (["fire"], True)
    # no trigger (e.g. no tolerance set): nothing happens whatever the metric
    t = step(np.array([False, True]), np.array([50.0, 1.0]), np.array([np.nan, np.nan]), 0.05)
    assert not t.fired.any() and not t.cleared.any() and t.active.tolist() == [False, True]


def test_step_is_vectorized_per_account():
    active = np.array([False, True, True, False])
    t = step(active, np.array([12.0, 12.0, 1.0, 1.0]), np.array([10.0, 10.0, 10.0, 10.0]), 0.05)
    assert t.fired.tolist() == [True, False, False, False]
    assert t.cleared.tolist() == [False, False, True, False]
    assert t.active.tolist() == [True, True, False, False]


def test_drawdown_from_the_running_peak():
    np.testing.assert_allclose(drawdown_pct([90.0, 100.0, 50.0], [100.0, 100.0, 200.0]),
                               [10.0, 0.0, 75.0])
    assert np.isnan(drawdown_pct([1.0], [0.0])).all()


def _days(n: int, start: date = date(2024, 1, 1)) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def test_watched_book_values_units_at_the_closes_and_tracks_its_peak():
    book = WatchedBook()
    d = _days(4)
    book.set_portfolio("a1", {"AAA": 10, "BBB": 20}, 1000.0, {"NEWCO": 5.0}, since=d[0],
                       closes={"AAA": 100.0, "BBB": 50.0})
    book.set_portfolio("a2", {"NEWCO": 100}, 0.0, {"NEWCO": 5.0}, since=d[0])
    assert book.values().tolist() == [3000.0, 500.0]  # NEWCO has no close: its snapshot price
    np.testing.assert_allclose(book.weights()[0], [1 / 3, 1 / 3, 0.0])
    book.advance(d[1], {"AAA": 120.0, "BBB": 50.0, "NEWCO": 4.0})
    v = book.advance(d[2], {"AAA": 60.0})  # BBB and NEWCO keep their last close
    assert v.tolist() == [2600.0, 400.0] and book.peak.tolist() == [3200.0, 500.0]
    np.testing.assert_allclose(drawdown_pct(v, book.peak), [100 * (1 - 2600 / 3200), 20.0])
    # an old day again changes nothing (a replay after reloading)
    assert book.advance(d[1], {"AAA": 1000.0}).tolist() == [2600.0, 400.0]


def test_a_reloaded_book_rebuilds_the_same_peaks_from_the_closes():
    rng = np.random.default_rng(3)
    d = _days(30)
    closes = [{"AAA": float(p), "BBB": float(q)} for p, q in
              100 * np.exp(np.cumsum(rng.normal(0, 0.03, (30, 2)), axis=0))]
    live = WatchedBook()
    for k in range(10):
        live.advance(d[k], closes[k])
    live.set_portfolio("a1", {"AAA": 3, "BBB": 1}, 50.0, {}, since=d[9], closes=closes[9])
    for k in range(10, 30):
        live.advance(d[k], closes[k])
    reloaded = WatchedBook()
    reloaded.load([("a1", {"AAA": 3, "BBB": 1}, 50.0, {}, d[9]), ("a2", {"BBB": 2}, 0.0, {}, d[20])])
    for k in range(30):
        (reloaded.take_closes(closes[k]) if d[k] < d[9] else reloaded.advance(d[k], closes[k]))
    np.testing.assert_allclose(reloaded.peak[:1], live.peak)
    np.testing.assert_allclose(reloaded.values()[:1], live.values())
    assert reloaded.peak[1] == pytest.approx(2 * max(c["BBB"] for c in closes[20:]))
    # the peak counts only days since the portfolio was known
    values = [50 + 3 * c["AAA"] + c["BBB"] for c in closes]
    assert live.peak[0] == pytest.approx(max(values[9:]))


def test_a_drawdown_driven_by_prices_raises_once_clears_and_raises_again():
    book = WatchedBook()
    book.set_portfolio("a1", {"AAA": 1}, 0.0, {"AAA": 100.0}, since=None)
    path = [100, 110, 95, 90, 85, 80, 100, 108, 95, 85]  # limit 20 %: 110 -> 88 or lower
    active, events = np.zeros(1, dtype=bool), []
    for day, px in zip(_days(len(path)), path, strict=True):
        v = book.advance(day, {"AAA": float(px)})
        t = step(active, drawdown_pct(v, book.peak), 20.0, 0.05)  # clears at 19 % or less
        events += [(day.day, "fire")] * int(t.fired[0]) + [(day.day, "clear")] * int(t.cleared[0])
        active = t.active
    # 85/110: 22.7 % (fires), 80/110 quiet, 100/110: 9 % (clears), 85/110 again: fires
    assert events == [(5, "fire"), (7, "clear"), (10, "fire")]


def test_vol_regime_ratio_jumps_when_volatility_does():
    rng = np.random.default_rng(5)
    calm = rng.normal(0, 0.01, (120, 2))
    stormy = np.vstack([calm, rng.normal(0, 0.01, (3, 2)) * np.array([1.0, 6.0])])
    vr = vol_regime(stormy, 0.94, lookback=20)
    assert vr.ratio[0] < 1.5 < vr.ratio[1]
    assert vr.forecast_daily[1] == pytest.approx(vr.ratio[1] * vr.level_daily[1])
    # the recursion is RiskMetrics with the model's bias correction
    s = 0.0
    for r in stormy[:, 1]:
        s = 0.94 * s + 0.06 * r * r
    assert vr.forecast_daily[1] == pytest.approx(np.sqrt(s / (1 - 0.94 ** len(stormy))))
    assert np.isnan(vol_regime(calm[:30], 0.94, lookback=20).ratio).all()  # too short


def test_portfolio_vol_annual_rows():
    cov = np.array([[1e-4, 0.0], [0.0, 4e-4]])
    W = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    np.testing.assert_allclose(portfolio_vol_annual(W, cov),
                               np.sqrt(np.array([1e-4, 0.25e-4 + 1e-4, 0.0]) * 252))
