"""Every dollar amount and percentage the narratives state is checked against the proposal and
the explanation: each line is parsed, each number compared with its source at the precision
shown, and no `$` or `%` may be left over that no check accounted for."""

# ruff: noqa: B023 - the checks are called at once, inside the loop iteration that defines them
from __future__ import annotations

import re
from decimal import Decimal

import pytest

from trimtab.rebalance import explain, from_snapshot, propose
from trimtab.rebalance.explain import EXPLAIN_DRIVERS
from trimtab.rebalance.narrative import _ADVISOR_NAME
from trimtab.shared.events import RiskAssessed, RiskModelInfo

from .conftest import drifted_account

MONEY = r"-?\$[\d,]+(?:\.\d\d)?"


def usd(s: str) -> float:
    return float(s.replace("$", "").replace(",", ""))


def close(shown: str, value: float) -> bool:
    """`shown` is `value` rounded to the cents or dollars it shows."""
    places = 2 if "." in shown else 0
    return abs(usd(shown) - float(value)) <= 0.5 * 10 ** -places + 1e-6


CASES = {
    "restricted-reserve": lambda: drifted_account(10, gains=True, reserve=4_000, restricted=["S02"], seed=11),
    "cash-short": lambda: drifted_account(6, gains=True, cash_weight=0.0, reserve=6_000, seed=8),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):  # type: ignore[no-untyped-def]
    snap = CASES[request.param]()
    p = propose(snap)
    risk = RiskAssessed(proposal_id=p.proposal_id, account_id=p.account_id, pre_vol_annual_pct=Decimal("14.3"),
                        post_vol_annual_pct=Decimal("13.1"), model=RiskModelInfo(name="ewma", version="1"))
    e = explain(p, drivers=EXPLAIN_DRIVERS, risk=risk, counterfactuals=True, max_counterfactual_orders=3)
    return snap, p, e


def _consume(line: str, pattern: str, check) -> str:  # type: ignore[no-untyped-def]
    """Check every match of `pattern` in `line` with `check(match)`; return the line without them."""
    for m in re.finditer(pattern, line):
        assert check(m), (line, m.group(0))
    return re.sub(pattern, "", line)


def test_every_number_in_the_advisor_voice_matches_its_source(case) -> None:  # type: ignore[no-untyped-def]
    snap, p, e = case
    inp = from_snapshot(snap)
    orders = {o.symbol: o for o in p.orders}
    trades = {t.symbol: t for t in e.trades}
    lot_index = {lot_id: k for k, lot_id in enumerate(inp.lot_ids)}
    names = {v: k for k, v in _ADVISOR_NAME.items()}
    current = None
    checked = 0
    for line in e.narrative_advisor.splitlines():
        rest = line
        if line.startswith("Account "):
            m = re.match(rf"Account \S+ \(\w+\), value ({MONEY}), cash ({MONEY}) \(reserve ({MONEY})\): "
                         rf"(\d+) order\(s\), est\. cost ({MONEY}), est\. tax ({MONEY})\.$", line)
            assert m, line
            assert close(m[1], inp.value_usd) and close(m[2], inp.cash_usd) and close(m[3], inp.cash_reserve_usd)
            assert int(m[4]) == len(p.orders)
            assert close(m[5], p.est_cost_usd) and close(m[6], p.est_tax_usd)
            rest = ""
        elif line.startswith("Risk "):
            m = re.search(r"volatility ([\d.]+)% -> ([\d.]+)%", line)
            assert m and m[1] == "14.3" and m[2] == "13.1"
            rest = ""
        elif re.match(r"(BUY|SELL) ", line):
            m = re.match(rf"(BUY|SELL) ([\d,.]+) (\S+) @ ~({MONEY}) \(({MONEY}), cost ({MONEY})\): weight "
                         r"([\d.]+)% -> ([\d.]+)% vs target ([\d.]+)% \(([+-][\d.]+) pp -> ([+-][\d.]+) pp\)\.$", line)
            assert m, line
            current = o = orders[m[3]]
            i = inp.symbols.index(o.symbol)
            assert m[1].lower() == o.side and Decimal(m[2].replace(",", "")) == o.shares
            assert close(m[4], o.est_price_usd) and close(m[5], o.est_notional_usd) and close(m[6], o.est_cost_usd)
            pre, post, target = float(p.pre_weights[o.symbol]), float(p.post_weights[o.symbol]), float(inp.target_weight[i])
            for shown, value in ((m[7], pre), (m[8], post), (m[9], target)):
                assert abs(float(shown) - 100 * value) <= 0.05 + 1e-9, (line, shown, value)
            assert abs(float(m[10]) - 100 * (pre - target)) <= 0.05 + 1e-9
            assert abs(float(m[11]) - 100 * (post - target)) <= 0.05 + 1e-9
            rest = ""
        elif line.startswith("  Reasons"):
            t = trades[current.symbol]
            sign = 1.0 if current.side == "buy" else -1.0

            head, _, parts = line.partition("): ")
            assert head == "  Reasons ($ toward this trade"
            rest = ""
            for part in parts.rstrip(".").split("; "):
                m = re.fullmatch(r"(.+) ([+-]\$[\d,]+) \(([+-][\d.]+) pp\)", part)
                assert m, part
                v = sign * t.contributions_usd[names[m[1]]]
                assert close(m[2].lstrip("+"), v), (part, v)
                assert abs(float(m[3]) - 100 * v / inp.value_usd) <= 0.005 + 1e-9, (part, v)
        elif line.startswith("  Lot "):
            m = re.match(rf"  Lot (\S+): ([\d,.]+) sh, basis ({MONEY}), acquired [\d-]+ \((long|short)-term\), "
                         rf"(gain|loss) ({MONEY}), tax ({MONEY})\.$", line)
            assert m, line
            k = lot_index[m[1]]
            shares = float(m[2].replace(",", ""))
            gain = shares * float(inp.lot_gain_usd_per_share[k])
            assert close(m[3], inp.lot_basis_usd_per_share[k]) and close(m[6], abs(gain))
            assert (m[5] == "loss") == (gain < 0) and (m[4] == "long") == bool(inp.lot_long_term[k])
            assert close(m[7], gain * float(inp.lot_tax_rate[k]))
            rest = ""
        elif line.startswith("  Wash sale:"):
            lots = [li for li in current.lots]
            loss = -sum(float(li.shares) * min(float(inp.lot_gain_usd_per_share[lot_index[li.lot_id]]), 0.0)
                        for li in lots)
            rest = _consume(line, rf"loss of ({MONEY})", lambda m: close(m[1], loss))
        elif line.startswith("  Would not trade if:"):
            cfs = {c.parameter: c for c in e.counterfactuals[current.symbol]}
            rest = _consume(line, r"(band >= |no band up to )([\d.]+)%", lambda m: abs(
                float(m[2]) - 100 * (cfs["band"].threshold if m[1].startswith("band") else cfs["band"].searched_to)) <= 0.05)
            rest = _consume(rest, rf"(price [<>]= |no price move to )({MONEY})", lambda m: close(
                m[2], cfs["price"].threshold if m[1].startswith("price") else cfs["price"].searched_to))
            rest = _consume(rest, rf"now ({MONEY})", lambda m: close(m[1], cfs["price"].current))
            rest = _consume(rest, r"\(([+-][\d.]+)%, ", lambda m: abs(float(m[1]) - cfs["price"].change_pct) <= 0.05)
            rest = _consume(rest, r"(tax rate [<>]= |tax rate to )([\d.]+)%", lambda m: abs(
                float(m[2]) - 100 * (cfs["tax_rate"].threshold if "=" in m[1] else cfs["tax_rate"].searched_to)) <= 0.05)
            rest = _consume(rest, r"now ([\d.]+)%", lambda m: abs(float(m[1]) - 100 * float(snap.policy.band_abs)) <= 0.05
                            or abs(float(m[1]) - 100 * float(snap.tax_rates.long_term)) <= 0.05)
        elif line.startswith("Restricted, not traded:"):
            rest = _consume(line, rf"(\w+) \(the restriction holds back an? \w+ of ({MONEY})\)", lambda m: close(
                m[2], abs(trades[m[1]].contributions_usd["restrictions"])))
        elif line.startswith("Note: dropped order under"):
            rest = _consume(line, rf"under ({MONEY})", lambda m: usd(m[1]) == 50.0)
        assert "$" not in rest and "%" not in rest, f"unchecked number in: {line!r} (left: {rest!r})"
        checked += 1
    assert checked >= 3 + 2 * len(p.orders)


def test_every_number_in_the_client_voice_matches_its_source(case) -> None:  # type: ignore[no-untyped-def]
    _, p, e = case
    orders = {o.symbol: o for o in p.orders}
    text = e.narrative_client
    text = _consume(text, rf"(Sell|Buy) ([\d,.]+) shares of (\S+) \(about ({MONEY})\)", lambda m: (
        Decimal(m[2].replace(",", "")) == orders[m[3]].shares and close(m[4], orders[m[3]].est_notional_usd)))
    text = _consume(text, rf"lower your taxes by about ({MONEY})", lambda m: close(m[1], -p.est_tax_usd))
    text = _consume(text, rf"cost about ({MONEY}) in taxes", lambda m: close(m[1], p.est_tax_usd))
    text = _consume(text, rf"trading costs: about ({MONEY})", lambda m: close(m[1], p.est_cost_usd))

    def price(m: re.Match[str]) -> bool:
        c = next(c for c in e.counterfactuals[m[1]] if c.parameter == "price")
        return abs(float(m[2]) - abs(c.change_pct)) <= 0.05 and (m[3] == "lower") == (c.change_pct < 0)

    text = _consume(text, r"price of (\S+) been about ([\d.]+)% (lower|higher)", price)
    assert "$" not in text and "%" not in text, text
