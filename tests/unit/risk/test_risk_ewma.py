"""The EWMA covariance against a plain reference loop, its batch form, and the textbook recursion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.risk.domain.ewma import EwmaCovariance, halflife_days

SYMS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def reference(days: list[dict[str, float]], lam: float) -> dict[tuple[str, str], float]:
    """The estimator written out pair by pair, day by day, with nothing vectorized."""
    s: dict[tuple[str, str], float] = {}
    w: dict[tuple[str, str], float] = {}
    for rets in days:
        for a, ra in rets.items():
            for b, rb in rets.items():
                s[a, b] = lam * s.get((a, b), 0.0) + (1 - lam) * ra * rb
                w[a, b] = lam * w.get((a, b), 0.0) + (1 - lam)
    return {k: s[k] / w[k] for k in s}


def panel_of(days: list[dict[str, float]]) -> np.ndarray:
    out = np.full((len(days), len(SYMS)), np.nan)
    for t, rets in enumerate(days):
        for sym, r in rets.items():
            out[t, SYMS.index(sym)] = r
    return out


day_returns = st.dictionaries(
    st.sampled_from(SYMS), st.floats(-0.2, 0.2, allow_nan=False, allow_subnormal=False),
    max_size=len(SYMS))


@settings(max_examples=150, deadline=None)
@given(days=st.lists(day_returns, max_size=40), lam=st.floats(0.5, 0.995))
def test_incremental_equals_reference_loop_and_batch(days, lam):
    inc = EwmaCovariance(lam)
    for rets in days:
        inc.update(rets)
    ref = reference(days, lam)
    batch = EwmaCovariance.from_panel(SYMS, panel_of(days), lam)
    cov_inc, cov_batch = inc.covariance(SYMS), batch.covariance(SYMS)
    for i, a in enumerate(SYMS):
        for j, b in enumerate(SYMS):
            if (a, b) in ref:
                assert cov_inc[i, j] == pytest.approx(ref[a, b], rel=1e-9, abs=1e-15)
                assert cov_batch[i, j] == pytest.approx(ref[a, b], rel=1e-9, abs=1e-15)
            else:  # never observed together: no estimate, not a zero
                assert math.isnan(cov_inc[i, j]) and math.isnan(cov_batch[i, j])
    assert inc.days == batch.days == sum(1 for d in days if d)
    for sym in SYMS:
        assert inc.observations(sym) == batch.observations(sym) == sum(sym in d for d in days)


def test_full_panel_is_the_riskmetrics_recursion_bias_corrected():
    rng = np.random.default_rng(7)
    r = rng.normal(0, 0.01, size=(300, 3))
    lam = 0.94
    m = EwmaCovariance(lam)
    s = np.zeros((3, 3))
    for row in r:
        m.update(dict(zip(["A", "B", "C"], row, strict=True)))
        s = lam * s + (1 - lam) * np.outer(row, row)
    np.testing.assert_allclose(m.covariance(["A", "B", "C"]), s / (1 - lam**300), rtol=1e-10)
    # After 300 days the correction is invisible: this is RiskMetrics proper.
    np.testing.assert_allclose(m.covariance(["A", "B", "C"]), s, rtol=1e-7)


def test_a_missing_return_leaves_the_symbol_untouched_rather_than_shrinking_it():
    m = EwmaCovariance(0.94)
    m.update({"A": 0.02, "B": 0.01})
    before = m.covariance(["A", "B"]).copy()
    for _ in range(30):
        m.update({"A": 0.02})  # B has no return: halted, or no close that day
    after = m.covariance(["A", "B"])
    assert after[1, 1] == before[1, 1] and after[0, 1] == before[0, 1]
    assert after[0, 0] == pytest.approx(0.02**2)


def test_new_symbols_grow_the_model_in_any_order():
    m = EwmaCovariance(0.9)
    m.update({"B": 0.01})
    m.update({"A": 0.03, "B": -0.01})
    assert m.observations("A") == 1 and m.observations("B") == 2
    assert m.daily_vol("A") == pytest.approx(0.03)
    assert m.covariance(["A", "B"])[0, 1] == pytest.approx(-0.0003)
    assert m.daily_vol("ZZZ") is None


def test_decay_is_validated_and_halflife_matches():
    with pytest.raises(ValueError):
        EwmaCovariance(1.0)
    assert 0.94 ** halflife_days(0.94) == pytest.approx(0.5)
    assert halflife_days(0.94) == pytest.approx(11.2, abs=0.01)
