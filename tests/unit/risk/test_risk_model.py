"""The price book and the tenant model: daily closes, aligned returns, incremental == rebuild."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.risk.domain.model import RiskModel
from trimtab.risk.domain.prices import PriceBook, TickEffect

D0 = date(2024, 1, 2)


def at(day: date, hour: int = 21) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def test_last_tick_of_a_day_wins_by_as_of_not_by_arrival():
    b = PriceBook()
    assert b.record("A", D0, 100.0, at(D0, 15)) is TickEffect.OPEN_DAY
    assert b.record("A", D0, 101.0, at(D0, 21)) is TickEffect.OPEN_DAY
    assert b.record("A", D0, 99.0, at(D0, 16)) is TickEffect.IGNORED  # older, arrived late
    assert b.close("A", D0).price_usd == 101.0


def test_returns_need_both_calendar_days_and_a_new_day_completes_the_previous():
    b = PriceBook()
    d1, d2, d3 = D0, D0 + timedelta(days=1), D0 + timedelta(days=2)
    b.record("A", d1, 100.0, at(d1))
    b.record("B", d1, 50.0, at(d1))
    assert b.record("A", d2, 110.0, at(d2)) is TickEffect.NEW_DAY
    b.record("C", d2, 10.0, at(d2))  # C starts on d2: no return into d2
    assert b.complete_days == [d1]
    assert b.record("A", d3, 121.0, at(d3)) is TickEffect.NEW_DAY
    assert b.returns_on(d2) == {"A": pytest.approx(math.log(1.1))}
    assert b.return_days() == [d2]
    assert b.record("B", d2, 55.0, at(d2)) is TickEffect.CORRECTION  # d2 was complete
    assert b.returns_on(d2) == {"A": pytest.approx(math.log(1.1)), "B": pytest.approx(math.log(1.1))}


def _walk(n_days: int, symbols: list[str], seed: int = 1) -> list[tuple[str, date, float, datetime]]:
    rng = np.random.default_rng(seed)
    prices = np.full(len(symbols), 100.0)
    ticks = []
    day = D0
    for _ in range(n_days):
        prices = prices * np.exp(rng.normal(0, 0.015, len(symbols)))
        for sym, p in zip(symbols, prices, strict=True):
            if rng.random() > 0.05:  # some symbols miss some days
                ticks.append((sym, day, round(float(p), 6), at(day)))
        day += timedelta(days=1 if day.weekday() < 4 else 3)
    return ticks


def _same(a: RiskModel, b: RiskModel) -> None:
    syms = sorted(a.covariance.symbols)
    assert syms == sorted(b.covariance.symbols)
    np.testing.assert_allclose(a.covariance.covariance(syms), b.covariance.covariance(syms),
                               rtol=1e-9, atol=1e-18, equal_nan=True)
    assert (a.observations, a.window_start, a.window_end) == (b.observations, b.window_start, b.window_end)
    assert a.digest() == b.digest()


def test_incremental_model_equals_a_rebuild_from_the_stored_closes():
    ticks = _walk(120, ["A", "B", "C", "D"])
    live = RiskModel(0.94)
    for t in ticks:
        live.on_tick(*t)
    assert live.observations == 118  # the first day has no return, the last is still open
    _same(live, RiskModel.from_closes(ticks, 0.94))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_any_arrival_order_ends_in_the_model_of_the_closes(seed):
    """Late ticks (partitions running at different speeds) only mark the model for rebuild."""
    ticks = _walk(30, ["A", "B", "C"], seed)
    shuffled = ticks[:]
    random.Random(seed).shuffle(shuffled)
    late = RiskModel(0.94)
    for t in shuffled:
        late.on_tick(*t)
    _same(late, RiskModel.from_closes(ticks, 0.94))


def test_version_counts_input_changes():
    m = RiskModel(0.94)
    d1, d2, d3 = D0, D0 + timedelta(days=1), D0 + timedelta(days=2)
    m.on_tick("A", d1, 10.0, at(d1))
    m.on_tick("A", d2, 11.0, at(d2))
    assert m.version == 0  # d1 completed but carries no return
    m.on_tick("A", d3, 12.0, at(d3))
    assert m.version == 1 and m.window_start == m.window_end == d2
    m.on_tick("A", d3, 12.5, at(d3, 22))  # the open day: no change of inputs
    assert m.version == 1
    m.on_tick("A", d2, 11.5, at(d2, 22))  # a correction of a complete day
    assert m.version == 2
    assert m.covariance.daily_vol("A") == pytest.approx(math.log(11.5 / 10.0))


def test_a_replay_of_500_days_of_20_symbols_is_fast():
    symbols = [f"S{k:02d}" for k in range(20)]
    ticks = _walk(500, symbols, seed=3)
    m = RiskModel(0.94)
    t0 = time.perf_counter()
    for t in ticks:
        m.on_tick(*t)
    _ = m.covariance
    assert time.perf_counter() - t0 < 2.0
    t0 = time.perf_counter()
    rebuilt = RiskModel.from_closes(ticks, 0.94)
    assert time.perf_counter() - t0 < 2.0
    _same(m, rebuilt)
