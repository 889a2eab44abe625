"""Drift policies: the exact rules (Decimal) and the vectorized engine both agree with a plain,
independent reference (exact fractions, one account at a time) for random books, policies and
prices, after any sequence of single-security ticks, batch ticks and account changes; a rebuild
of the engine from the same data gives the same state."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.drift_monitor.domain.engine import DriftEngine, EngineAccount
from trimtab.drift_monitor.domain.rules import (
    AccountState,
    Policy,
    effective_targets,
    evaluate,
    resolve_policy,
)

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG"]
D = Decimal
EPS = Fraction(1, 10**7)  # near a boundary, float screening may say either; the exact check decides


def ref_rules(a: AccountState, prices: dict[str, Decimal | None]) -> tuple[set[str], Fraction] | None:
    """Rules breached (names) and the distance of the closest comparison to its boundary."""
    syms = [s for s in SYMBOLS if a.shares.get(s, 0) != 0 or a.targets.get(s, 0) > 0]
    if any(prices.get(s) is None for s in syms):
        return None
    F = Fraction
    total = F(a.cash_usd) + sum((F(a.shares.get(s, 0)) * F(prices[s]) for s in syms), F(0))  # type: ignore[arg-type]
    if total <= 0:
        return None
    p = a.policy
    tg = {s: F(a.targets.get(s, 0)) for s in syms}
    dev = {s: F(a.shares.get(s, 0)) * F(prices[s]) / total - tg[s] for s in syms}  # type: ignore[arg-type]
    fired: set[str] = set()
    margins: list[Fraction] = []
    tradable = [s for s in syms if s not in a.never_trade]
    if p.band_abs is not None or p.band_rel is not None:
        for s in tradable:
            band = max(F(p.band_rel or 0) * tg[s], F(p.band_abs or 0))
            margins.append(abs(abs(dev[s]) - band))
            if abs(dev[s]) > band:
                fired.add("band")
    cash_tw = 1 - sum(tg.values(), F(0))
    pd = (sum((abs(dev[s]) for s in tradable), F(0)) + abs(F(a.cash_usd) / total - cash_tw)) / 2
    if p.portfolio_band is not None:
        margins.append(abs(pd - F(p.portfolio_band)))
        if pd > F(p.portfolio_band):
            fired.add("portfolio_drift")
    unin = F(a.cash_usd) - max(F(a.cash_reserve_usd), cash_tw * total)
    if p.cash_trigger_usd is not None:
        margins.append(abs(unin - F(p.cash_trigger_usd)) / total)
        if unin > F(p.cash_trigger_usd):
            fired.add("cash_excess")
    if a.withdrawal_usd > 0:
        margins.append(abs(F(a.cash_usd) - F(a.cash_reserve_usd) - F(a.withdrawal_usd)) / total)
        if F(a.cash_usd) < F(a.cash_reserve_usd) + F(a.withdrawal_usd):
            fired.add("withdrawal")
    return fired, min(margins, default=F(1))


dec = st.decimals(min_value=0, max_value=5000, places=4, allow_nan=False, allow_infinity=False)
band_st = st.sampled_from([None, D("0.01"), D("0.02"), D("0.05")])


@st.composite
def policy_st(draw):  # type: ignore[no-untyped-def]
    return Policy(band_abs=draw(band_st), band_rel=draw(st.sampled_from([None, D("0.1"), D("0.25")])),
                  portfolio_band=draw(st.sampled_from([None, D("0.03"), D("0.1")])),
                  cash_trigger_usd=draw(st.sampled_from([None, D("0"), D("500")])))


@st.composite
def account_st(draw):  # type: ignore[no-untyped-def]
    shares = {s: draw(dec) for s in SYMBOLS if draw(st.booleans())}
    raw = {s: draw(st.integers(0, 100)) for s in SYMBOLS if draw(st.booleans())}
    scale = max(100, sum(raw.values()) + draw(st.integers(0, 50)))
    targets = {s: D(v) / D(scale) for s, v in raw.items() if v > 0}
    return AccountState(
        cash_usd=draw(st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False)),
        shares=shares, targets=targets, policy=draw(policy_st()),
        cash_reserve_usd=draw(st.sampled_from([D(0), D(100)])),
        never_trade=frozenset(draw(st.lists(st.sampled_from(SYMBOLS), max_size=2))),
        withdrawal_usd=draw(st.sampled_from([D(0), D(0), D(2000)])))


some_price = st.decimals(min_value=D("0.01"), max_value=2000, places=2, allow_nan=False)
price_st = st.one_of(st.none(), some_price)
# Most symbols always priced (so most accounts are measurable); two may lack a price.
prices_st = st.fixed_dictionaries({s: (price_st if s in ("FFF", "GGG") else some_price) for s in SYMBOLS})


def engine_account(aid: str, a: AccountState, rev: int = 1) -> EngineAccount:
    p = a.policy

    def f(x: Decimal | None) -> float | None:
        return None if x is None else float(x)

    return EngineAccount(aid, rev, float(a.cash_usd), f(p.band_abs), {s: float(q) for s, q in a.shares.items()},
                         {s: float(w) for s, w in a.targets.items()}, band_rel=f(p.band_rel),
                         portfolio_band=f(p.portfolio_band), cash_trigger_usd=f(p.cash_trigger_usd),
                         cash_reserve_usd=float(a.cash_reserve_usd), withdrawal_usd=float(a.withdrawal_usd),
                         never_trade=a.never_trade)


def check(eng: DriftEngine, book: dict[str, AccountState], prices: dict[str, Decimal | None],
          got: set[str] | None = None) -> None:
    if got is None:
        got = set(eng._eligible(eng.evaluate_all(), now_s=0.0, min_interval_s=0.0))
    for aid, a in book.items():
        ref = ref_rules(a, prices)
        if ref is None:
            assert aid not in got, aid
            continue
        fired, margin = ref
        if margin > EPS:
            assert (aid in got) == bool(fired), (aid, fired)
        elif fired:
            assert aid in got, (aid, fired)  # the screen may only add candidates


@settings(max_examples=150, deadline=None)
@given(account_st(), prices_st)
def test_exact_rules_equal_reference(a, prices):  # type: ignore[no-untyped-def]
    ev = evaluate(a, {s: p for s, p in prices.items() if p is not None})
    ref = ref_rules(a, prices)
    assert ev.measurable == (ref is not None)
    if ref is None:
        assert ev.rules == ()
        return
    names = {"band" if r.endswith("_band") else r for r in ev.rules}
    assert names == ref[0]
    if ev.rules:
        assert ev.rule == ev.rules[0]
        if "withdrawal" in ref[0]:
            assert ev.rule == "withdrawal"


@settings(max_examples=200, deadline=None)
@given(st.lists(account_st(), min_size=1, max_size=8), prices_st,
       st.lists(st.tuples(st.sampled_from(SYMBOLS), some_price), max_size=12),
       st.lists(st.tuples(st.integers(0, 7), account_st()), max_size=4), st.booleans())
def test_engine_equals_reference_after_ticks_and_changes(accts, prices, ticks, changes, batch):  # type: ignore[no-untyped-def]
    eng = DriftEngine(capacity=2)  # small, so growth, moves and slack are exercised
    book = {f"A{i}": a for i, a in enumerate(accts)}
    for aid, a in book.items():
        eng.upsert(engine_account(aid, a))
    prices = dict(prices)
    for s, p in prices.items():
        if p is not None:
            eng.set_price(s, float(p))
    check(eng, book, prices)
    for k, (s, p) in enumerate(ticks):  # single-security ticks: incremental values and bounds
        prices[s] = p
        got = eng.tick(s, float(p), now_s=0.0, min_interval_s=0.0)
        holders = {aid for aid, a in book.items() if a.shares.get(s, 0) != 0 or a.targets.get(s, 0) > 0}
        assert set(got) <= holders
        check(eng, {aid: book[aid] for aid in holders}, prices, set(got))
        if k < len(changes):  # an account changes between ticks (new symbols, policy, cash)
            i, a = changes[k]
            aid = f"A{i % len(book)}"
            book[aid] = a
            eng.upsert(engine_account(aid, a, rev=k + 2))
    if batch:
        got = set(eng.tick_many({s: float(p) for s, p in prices.items() if p is not None}, 0.0, 0.0))
        check(eng, book, prices, got)
    check(eng, book, prices)
    # a rebuild from the same data (the restart path, vectorized load) holds the same state
    fresh = DriftEngine()
    rows, syms, sh, tg, nt = [], [], [], [], []
    ids = sorted(book)
    for r, aid in enumerate(ids):
        a = book[aid]
        for s in sorted({s for s, q in a.shares.items() if q != 0} | {s for s, w in a.targets.items() if w > 0}):
            rows.append(r)
            syms.append(s)
            sh.append(float(a.shares.get(s, 0)))
            tg.append(float(a.targets.get(s, 0)))
            nt.append(s in a.never_trade)

    def f(x: Decimal | None) -> float:  # type: ignore[no-redef]
        return np.nan if x is None else float(x)

    for s, p in prices.items():
        if p is not None:
            fresh.set_price(s, float(p))
    fresh.load(ids, {
        "revision": np.ones(len(ids), np.int64), "cash_usd": [float(book[a].cash_usd) for a in ids],
        "cash_reserve_usd": [float(book[a].cash_reserve_usd) for a in ids],
        "portfolio_band": [f(book[a].policy.portfolio_band) for a in ids],
        "cash_trigger_usd": [f(book[a].policy.cash_trigger_usd) for a in ids],
        "withdrawal_usd": [float(book[a].withdrawal_usd) for a in ids],
    }, rows, syms, sh, tg, never_trade=nt, band_abs=[f(book[a].policy.band_abs) for a in ids],
        band_rel=[f(book[a].policy.band_rel) for a in ids])
    a_scr, b_scr = eng.evaluate_all(), fresh.evaluate_all()
    order_a = [eng._ids[i] for i in a_scr.rows]
    order_b = [fresh._ids[i] for i in b_scr.rows]
    ia, ib = np.argsort(order_a), np.argsort(order_b)
    for name in ("measurable", "band", "portfolio", "cash_excess", "withdrawal"):
        assert (getattr(a_scr, name)[ia] == getattr(b_scr, name)[ib]).all(), name
    va, vb = eng._value[a_scr.rows][ia], fresh._value[b_scr.rows][ib]
    assert np.allclose(va, vb, rtol=1e-12, equal_nan=True)
    eng.compact()  # compaction keeps the state too
    c_scr = eng.evaluate_all()
    ic = np.argsort([eng._ids[i] for i in c_scr.rows])
    assert (c_scr.band[ic] == b_scr.band[ib]).all()


def test_policy_layers_and_rule_names() -> None:
    p = resolve_policy({"band_abs": "0.03", "portfolio_band": "0.1"}, {"band_abs": None, "band_rel": "0.25"})
    assert (p.band_abs, p.band_rel, p.portfolio_band, p.band_rule) == (None, D("0.25"), D("0.1"), "relative_band")
    assert resolve_policy({"band_rel": "0.2"}).band_rule == "hybrid_band"  # default 5 % absolute floor
    assert resolve_policy().band_rule == "absolute_band"
    h = resolve_policy({"band_rel": "0.2", "band_abs": "0.02"})
    assert h.band_for(D("0.5")) == D("0.1") and h.band_for(D("0.05")) == D("0.02")
    assert h.snapshot_band({"A": D("0.5")}) == D("0.02")
    assert resolve_policy({"band_abs": None, "band_rel": "0.2", "trade_back_band": "0.01"}).snapshot_band({}) == D("0.01")


def test_effective_targets_spread_exclusions_pro_rata() -> None:
    base = {"AAA": D("0.5"), "BBB": D("0.3"), "CCC": D("0.1")}
    eff = effective_targets(base, {"CCC"})
    assert eff == {"AAA": D("0.5625000000"), "BBB": D("0.3375000000")}
    assert sum(eff.values()) <= sum(base.values())
    assert effective_targets(base, set()) == base
    assert effective_targets({"AAA": D("0.5")}, {"AAA"}) == {}


def test_known_policies() -> None:
    # 50 AAA @ 12 = 600, 30 BBB @ 10 = 300, cash 100: weights 0.6 / 0.3, targets 0.5 / 0.3.
    sh, tg, px = {"AAA": D(50), "BBB": D(30)}, {"AAA": D("0.5"), "BBB": D("0.3")}, {"AAA": D(12), "BBB": D(10)}
    rel = evaluate(AccountState(D(100), sh, tg, Policy(band_abs=None, band_rel=D("0.25"))), px)
    assert rel.bands == {"AAA": D("0.125"), "BBB": D("0.075")} and rel.rules == ()
    rel = evaluate(AccountState(D(100), sh, tg, Policy(band_abs=None, band_rel=D("0.15"))), px)
    assert rel.breached == ("AAA",) and rel.rule == "relative_band"
    port = evaluate(AccountState(D(100), sh, tg, Policy(band_abs=None, portfolio_band=D("0.09"))), px)
    assert port.portfolio_drift == D("0.1") and port.rules == ("portfolio_drift",)  # (0.1 + 0 + 0.1) / 2
    cash = evaluate(AccountState(D(100), sh, tg, Policy(band_abs=None, cash_trigger_usd=D("0"))), px)
    assert cash.uninvested_cash_usd == D(-100) and cash.rules == ()  # cash target 0.2 x 1000 = 200
    wd = evaluate(AccountState(D(100), sh, tg, Policy(), withdrawal_usd=D(150)), px)
    assert wd.rules == ("withdrawal", "absolute_band") and wd.withdrawal_shortfall_usd == D(50)
    frozen = evaluate(AccountState(D(100), sh, tg, Policy(), never_trade=frozenset({"AAA"})), px)
    assert frozen.rules == () and "AAA" not in frozen.bands


def test_long_tick_sequences_track_the_exact_rules() -> None:
    """Hundreds of single-security ticks on a small book: after every tick the engine's screen of
    the holders equals the exact rules (bounds and values maintained incrementally)."""
    rng = np.random.default_rng(3)
    syms = SYMBOLS[:5]
    book: dict[str, AccountState] = {}
    for i in range(30):
        held = rng.choice(syms, size=int(rng.integers(2, 5)), replace=False)
        w = rng.dirichlet(np.ones(len(held))) * 0.95
        book[f"A{i}"] = AccountState(
            cash_usd=D(int(rng.integers(0, 300))), shares={s: D(int(rng.integers(1, 40))) for s in held},
            targets={s: D(f"{x:.4f}") for s, x in zip(held, w, strict=True)},
            policy=[Policy(band_abs=D("0.05")), Policy(band_abs=None, band_rel=D("0.2")),
                    Policy(band_abs=D("0.02"), band_rel=D("0.15"), portfolio_band=D("0.06"))][i % 3])
    eng = DriftEngine()
    for aid, a in book.items():
        eng.upsert(engine_account(aid, a))
    prices: dict[str, Decimal | None] = {s: D(10) for s in syms}
    for s in syms:
        eng.set_price(s, 10.0)
    for _ in range(600):
        s = str(rng.choice(syms))
        p = D(f"{float(prices[s]) * float(rng.uniform(0.85, 1.17)):.2f}")  # type: ignore[arg-type]
        prices[s] = max(p, D("0.5"))
        got = set(eng.tick(s, float(prices[s]), now_s=0.0, min_interval_s=0.0))  # type: ignore[arg-type]
        holders = {aid: a for aid, a in book.items() if s in a.shares}
        check(eng, holders, prices, got)
        for aid, a in holders.items():
            ev = evaluate(a, prices)  # type: ignore[arg-type]
            assert abs(eng._value[eng._row[aid]] - float(ev.total_value_usd)) <= 1e-9 * float(ev.total_value_usd)


def test_the_optimizer_gets_each_symbols_own_band_under_relative_bands() -> None:
    targets = {"A": D("0.5"), "B": D("0.3"), "C": D("0.05"), "Z": D("0")}
    hybrid = resolve_policy({"band_rel": "0.2", "band_abs": "0.02"})
    # 20 % of the target, at least 2 %: A 10 %, B 6 %, C 2 % (the default band, left out).
    assert hybrid.snapshot_band(targets) == D("0.02")
    assert hybrid.snapshot_bands(targets) == {"A": D("0.10"), "B": D("0.06")}
    relative = resolve_policy({"band_abs": None, "band_rel": "0.2"})
    assert relative.snapshot_band(targets) == D("0.010")
    assert relative.snapshot_bands(targets) == {"A": D("0.10"), "B": D("0.06")}
    # One band for every symbol: nothing per symbol.
    assert resolve_policy({"band_abs": "0.03"}).snapshot_bands(targets) is None
    trade_back = resolve_policy({"band_abs": None, "band_rel": "0.2", "trade_back_band": "0.01"})
    assert trade_back.snapshot_bands(targets) is None
