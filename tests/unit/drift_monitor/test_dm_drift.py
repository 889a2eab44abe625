"""Drift arithmetic: the vectorized screen, the exact Decimal computation and the engine all agree
with a plain, independent reference (exact fractions, one account at a time)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.drift_monitor.domain.drift import drift_of, vector_drift
from trimtab.drift_monitor.domain.engine import DriftEngine, EngineAccount

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]


def reference(cash, shares, targets, prices, band):  # type: ignore[no-untyped-def]
    """Weights, deviations, max |deviation|, fires — exact, None where undefined."""
    rel = [s for s in SYMBOLS if shares.get(s, 0) != 0 or targets.get(s, 0) > 0]
    if any(prices.get(s) is None for s in rel):
        return None
    total = Fraction(cash) + sum((Fraction(shares.get(s, 0)) * Fraction(prices[s]) for s in rel), Fraction(0))
    if total <= 0:
        return None
    w = {s: Fraction(shares.get(s, 0)) * Fraction(prices[s]) / total for s in rel}
    dev = {s: w[s] - Fraction(targets.get(s, 0)) for s in rel}
    mx = max((abs(d) for d in dev.values()), default=Fraction(0))
    return w, dev, mx, mx > Fraction(band)


dec = st.decimals(min_value=0, max_value=5000, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def account(draw):  # type: ignore[no-untyped-def]
    shares = {s: draw(dec) for s in SYMBOLS if draw(st.booleans())}
    raw = {s: draw(st.integers(0, 100)) for s in SYMBOLS if draw(st.booleans())}
    scale = max(100, sum(raw.values()) + draw(st.integers(0, 50)))
    targets = {s: Decimal(v) / Decimal(scale) for s, v in raw.items()}
    cash = draw(st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False))
    band = draw(st.sampled_from([Decimal("0.01"), Decimal("0.02"), Decimal("0.05"), Decimal("0.1")]))
    return cash, shares, targets, band


prices_st = st.fixed_dictionaries({s: st.one_of(st.none(), st.decimals(min_value=Decimal("0.01"), max_value=2000,
                                                                    places=2, allow_nan=False)) for s in SYMBOLS})


def as_matrix(book, prices):  # type: ignore[no-untyped-def]
    sh = np.array([[float(a[1].get(s, 0)) for s in SYMBOLS] for a in book])
    tg = np.array([[float(a[2].get(s, 0)) for s in SYMBOLS] for a in book])
    cash = np.array([float(a[0]) for a in book])
    band = np.array([float(a[3]) for a in book])
    px = np.array([np.nan if prices[s] is None else float(prices[s]) for s in SYMBOLS])
    return sh, tg, cash, px, band


@settings(max_examples=200, deadline=None)
@given(st.lists(account(), min_size=1, max_size=8), prices_st)
def test_vectorized_drift_equals_reference(book, prices):  # type: ignore[no-untyped-def]
    vd = vector_drift(*as_matrix(book, prices))
    for i, (cash, shares, targets, band) in enumerate(book):
        ref = reference(cash, shares, targets, prices, band)
        assert bool(vd.measurable[i]) == (ref is not None)
        if ref is None:
            assert not vd.breach[i]
            continue
        w, dev, mx, fires = ref
        for j, s in enumerate(SYMBOLS):
            if s in w:
                assert abs(vd.weights[i, j] - float(w[s])) <= 1e-9
                assert abs(vd.deviations[i, j] - float(dev[s])) <= 1e-9
            else:
                assert vd.deviations[i, j] == 0
        assert abs(vd.max_abs_deviation[i] - float(mx)) <= 1e-9
        if abs(mx - Fraction(band)) > Fraction(1, 10**9):  # away from the boundary they must agree
            assert bool(vd.breach[i]) == fires


@settings(max_examples=200, deadline=None)
@given(account(), prices_st)
def test_exact_drift_equals_reference(acc, prices):  # type: ignore[no-untyped-def]
    cash, shares, targets, band = acc
    px = {s: p for s, p in prices.items() if p is not None}
    r = drift_of(cash, shares, targets, px, band)
    ref = reference(cash, shares, targets, prices, band)
    assert r.measurable == (ref is not None)
    if ref is None:
        assert not r.fires and r.weights == {}
        return
    w, dev, mx, fires = ref
    assert set(r.weights) == set(w)
    for s in w:  # Decimal at 28 digits against exact fractions
        assert abs(Fraction(r.weights[s]) - w[s]) < Fraction(1, 10**20)
        assert abs(Fraction(r.deviations[s]) - dev[s]) < Fraction(1, 10**20)
    assert r.fires == fires
    assert set(r.breached) == {s for s in dev if abs(dev[s]) > Fraction(band)}


@settings(max_examples=100, deadline=None)
@given(st.lists(account(), min_size=1, max_size=10), prices_st, st.sampled_from(SYMBOLS))
def test_engine_candidates_are_the_breaching_accounts_touching_the_symbol(book, prices, symbol):  # type: ignore[no-untyped-def]
    eng = DriftEngine(capacity=2)  # small, so growth is exercised
    for i, (cash, shares, targets, band) in enumerate(book):
        eng.upsert(EngineAccount(f"A{i}", 1, float(cash), float(band),
                                 {s: float(q) for s, q in shares.items()},
                                 {s: float(w) for s, w in targets.items() if w > 0}))
    for s, p in prices.items():
        if p is not None:
            eng.set_price(s, float(p))
    got = set(eng.candidates(symbol, now_s=0.0, min_interval_s=0.0))
    for i, (cash, shares, targets, band) in enumerate(book):
        ref = reference(cash, shares, targets, prices, band)
        touches = shares.get(symbol, 0) != 0 or targets.get(symbol, 0) > 0
        if ref is None or not touches:
            assert f"A{i}" not in got
        elif abs(ref[2] - Fraction(band)) > Fraction(1, 10**8):
            assert (f"A{i}" in got) == ref[3]


def test_known_example() -> None:
    # 50 AAA @ 12 = 600, 30 BBB @ 10 = 300, cash 100: total 1000; targets 0.5 / 0.3.
    r = drift_of(Decimal("100"), {"AAA": Decimal(50), "BBB": Decimal(30)},
                 {"AAA": Decimal("0.5"), "BBB": Decimal("0.3")},
                 {"AAA": Decimal(12), "BBB": Decimal(10)}, Decimal("0.05"))
    assert r.total_value_usd == 1000
    assert r.weights == {"AAA": Decimal("0.6"), "BBB": Decimal("0.3")}
    assert r.deviations == {"AAA": Decimal("0.1"), "BBB": Decimal("0")}
    assert r.breached == ("AAA",) and r.rule == "absolute_band"
    missing = drift_of(Decimal("100"), {"AAA": Decimal(50)}, {"BBB": Decimal("0.3")},
                       {"AAA": Decimal(12)}, Decimal("0.05"))
    assert missing.missing_prices == ("BBB",) and not missing.fires


def test_engine_blocked_cooldown_and_removal() -> None:
    eng = DriftEngine()
    base = dict(cash_usd=0.0, band_abs=0.05, shares={"AAA": 10.0}, targets={"AAA": 0.5})
    eng.upsert(EngineAccount("P", 1, blocked=True, **base))  # type: ignore[arg-type]
    eng.upsert(EngineAccount("Q", 1, rearmed_at_s=100.0, **base))  # type: ignore[arg-type]
    eng.upsert(EngineAccount("R", 1, **base))  # type: ignore[arg-type]
    eng.set_price("AAA", 5.0)
    assert eng.candidates("AAA", now_s=150.0, min_interval_s=300) == ["R"]
    assert sorted(eng.candidates("AAA", now_s=400.0, min_interval_s=300)) == ["Q", "R"]
    eng.remove("Q")
    assert eng.account_ids() == {"P", "R"} and eng.candidates("AAA", 400.0, 300) == ["R"]
    assert eng.candidates("ZZZ", 0, 0) == []
