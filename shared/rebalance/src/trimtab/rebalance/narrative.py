"""The two voices of an explanation, written from the numbers only (deterministic text).

Advisor: every order with its size, the drivers' contributions in dollars (positive = toward
this trade), the weight before and after against target in percentage points, the lots sold
with their term and realized gain or loss, the tax and cost estimates and, if the risk service
assessed the proposal, volatility before and after.

The advisor also reads each order's wash-sale status (`wash_sale_status`) and, when they were
computed, its counterfactuals: the band, price and tax rate at which it would not have happened.

Client: the same facts in plain language, main reason first, no jargon (no "drift", no
"Shapley", no basis points), and the price move that would have made a trade unnecessary. Both
texts depend only on their inputs, so a replay reproduces them byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from trimtab.shared.events import Order, RiskAssessed

from .inputs import RebalanceInput
from .version import OPTIMIZER_VERSION

if TYPE_CHECKING:
    from .counterfactual import Counterfactual
    from .explain import TradeExplanation

#: A driver is named as a reason when it moves at least this share of the order's dollars.
MAIN_REASON_SHARE = 0.10

#: The main reason for an order, by (driver, side), in plain words.
_CLIENT_REASON = {
    ("drift", "sell"): "bringing your mix back in line with your plan",
    ("drift", "buy"): "bringing your mix back in line with your plan",
    ("tax", "sell"): "realizing a loss that can lower your taxes",
    ("tax", "buy"): "reinvesting money from sales that lower your taxes",
    ("cash", "sell"): "keeping enough cash available in your account",
    ("cash", "buy"): "putting cash you do not need to work",
    ("cost", "sell"): "keeping trading costs down",
    ("cost", "buy"): "keeping trading costs down",
    ("restrictions", "sell"): "the restrictions on your account",
    ("restrictions", "buy"): "the restrictions on your account",
    ("tax_losses", "sell"): "realizing a loss that can lower your taxes",
    ("tax_losses", "buy"): "reinvesting money from sales that lower your taxes",
    ("tax_gains", "sell"): "selling where it costs little or no tax",
    ("tax_gains", "buy"): "buying instead of selling holdings that would owe tax",
    ("risk", "sell"): "keeping your portfolio's ups and downs close to your plan's",
    ("risk", "buy"): "keeping your portfolio's ups and downs close to your plan's",
    ("esg", "sell"): "your wish not to hold companies your values screen out",
    ("esg", "buy"): "reinvesting in line with your values screen",
}
#: What held an order back, where that is worth telling a client.
_CLIENT_HELD_BACK = {
    ("tax", "sell"): "to limit taxes on gains",
    ("tax_gains", "sell"): "to limit taxes on gains",
    ("cash", "buy"): "to keep your cash reserve in place",
    ("restrictions", "sell"): "because of the restrictions on your account",
    ("restrictions", "buy"): "because of the restrictions on your account",
    ("esg", "buy"): "because of your values screen",
}
_ADVISOR_NAME = {
    "drift": "drift to target", "tax": "tax", "cash": "cash reserve/drag", "cost": "trading cost",
    "restrictions": "restrictions", "tax_losses": "tax: harvesting losses",
    "tax_gains": "tax: avoiding gains", "risk": "factor risk (tracking error)",
    "esg": "ESG screen",
}


def _usd(x: float | Decimal, cents: bool = True) -> str:
    x = float(x)
    sign = "-" if x < 0 else ""
    return f"{sign}${abs(x):,.2f}" if cents else f"{sign}${abs(x):,.0f}"


def _signed_usd(x: float) -> str:
    return ("+" if x >= 0 else "-") + f"${abs(x):,.0f}"


def _pct(w: float) -> str:
    return f"{100 * w:.1f}%"


def _shares(q: Decimal | float) -> str:
    d = Decimal(str(q)).normalize()
    return f"{d:,f}"


def _order_map(orders: Sequence[Order]) -> dict[str, Order]:
    return {o.symbol: o for o in orders}


def _toward(t: TradeExplanation, side: str) -> list[tuple[str, float]]:
    """(driver, dollars toward this order's side), largest magnitude first, then driver order."""
    sign = 1.0 if side == "buy" else -1.0
    items = [(d, sign * v) for d, v in t.contributions_usd.items()]
    return sorted(items, key=lambda kv: (-abs(kv[1]), kv[0]))


def _lot_lines(inp: RebalanceInput, order: Order) -> list[str]:
    index = {lot_id: lot for lot, lot_id in enumerate(inp.lot_ids)}
    out = []
    for li in order.lots:
        lot = index.get(li.lot_id)
        if lot is None:
            out.append(f"{li.lot_id}: {_shares(li.shares)} sh")
            continue
        gain = float(li.shares) * float(inp.lot_gain_usd_per_share[lot])
        term = "long-term" if inp.lot_long_term[lot] else "short-term"
        kind = "gain" if gain >= 0 else "loss"
        tax = gain * float(inp.lot_tax_rate[lot])
        out.append(f"{li.lot_id}: {_shares(li.shares)} sh, basis {_usd(inp.lot_basis_usd_per_share[lot])}, "
                   f"acquired {inp.lot_acquired_on[lot].isoformat()} ({term}), {kind} {_usd(abs(gain))}, "
                   f"tax {_usd(tax)}")
    return out


def _weights(proposal: Any, sym: str) -> tuple[float, float]:
    pre = float(proposal.pre_weights.get(sym, 0)) if hasattr(proposal, "pre_weights") else 0.0
    post = float(proposal.post_weights.get(sym, 0)) if hasattr(proposal, "post_weights") else 0.0
    return pre, post


def wash_sale_status(inp: RebalanceInput, orders: Sequence[Order], notes: Sequence[str], *,
                     household_known: bool = False) -> dict[str, str]:
    """Per order, its wash-sale status in words, from the lots sold, the wash groups and the
    optimizer's notes (which record the harvest-or-buy decision of a group)."""
    index = {lot_id: k for k, lot_id in enumerate(inp.lot_ids)}
    group_of = dict(zip(inp.symbols, inp.groups, strict=True))
    bought = {o.symbol for o in orders if o.side == "buy"}
    kept = {s.strip() for n in notes if n.startswith("wash-sale rule: loss lots kept")
            for s in n.split(":", 2)[2].split(",")}
    where = ("in this proposal or in the household's last 30 days" if household_known
             else "in this proposal (the household's other trades were not given)")
    out: dict[str, str] = {}
    for o in orders:
        group = group_of.get(o.symbol, o.symbol)
        members = sorted(s for s, g in group_of.items() if g == group)
        if o.side == "sell":
            loss = sum(float(li.shares) * float(inp.lot_gain_usd_per_share[index[li.lot_id]])
                       for li in o.lots if li.lot_id in index
                       and inp.lot_gain_usd_per_share[index[li.lot_id]] < 0)
            if loss >= 0:
                out[o.symbol] = "not applicable (no loss realized)"
            elif bought & set(members):
                out[o.symbol] = (f"WASH SALE: a loss of {_usd(-loss)} is realized and "
                                 f"{', '.join(sorted(bought & set(members)))} is bought")
            else:
                out[o.symbol] = (f"clean: loss of {_usd(-loss)} realized, no purchase of "
                                 f"{', '.join(members)} {where}")
        elif o.symbol in kept:
            out[o.symbol] = (f"clean: loss lots of {', '.join(members)} are kept so that this "
                             f"purchase does not wash a loss")
        else:
            out[o.symbol] = f"clean: no loss sold in {', '.join(members)} {where}"
    return out


def _between(label: str, fmt: Callable[[Any], str], c: Counterfactual, again: str) -> str:
    """A stretch where the order stops: "<label> between lo and hi (trades again <again>; now x)"."""
    lo, hi = sorted((c.threshold, c.until))
    return f"{label} between {fmt(lo)} and {fmt(hi)} (trades again {again}; now {fmt(c.current)})"


def _counterfactual_text(c: Counterfactual) -> str:
    """One counterfactual for the advisor: a one-sided threshold only where the order stays
    stopped beyond it; where it stops and comes back, the stretch where it is stopped."""
    if c.parameter == "band":
        if c.threshold is None:
            return f"no band up to {_pct(c.searched_to)} stops it (now {_pct(c.current)})"
        if c.until is not None:
            return _between("band", _pct, c, "wider")
        return f"band >= {_pct(c.threshold)} (now {_pct(c.current)})"
    if c.parameter == "price":
        rel = "<=" if c.direction == "below" else ">="
        if c.threshold is None:
            return (f"no price move to {_usd(c.searched_to)} stops it (now {_usd(c.current)})")
        if c.until is not None:
            return _between("price", _usd, c, "lower" if c.direction == "below" else "higher")
        return f"price {rel} {_usd(c.threshold)} ({c.change_pct:+.1f}%, now {_usd(c.current)})"
    rel = ">=" if c.direction == "above" else "<="
    if c.threshold is None:
        return f"no long-term tax rate to {_pct(c.searched_to)} stops it (now {_pct(c.current)})"
    if c.until is not None:
        return _between("long-term tax rate", _pct, c, "lower" if c.direction == "below" else "higher")
    return f"long-term tax rate {rel} {_pct(c.threshold)} (now {_pct(c.current)})"


def advisor_narrative(inp: RebalanceInput, proposal: Any, trades: Sequence[TradeExplanation],
                      risk: RiskAssessed | None, *,
                      counterfactuals: Mapping[str, Sequence[Counterfactual]] | None = None,
                      wash_sale: Mapping[str, str] | None = None) -> str:
    orders = _order_map(proposal.orders)
    by_symbol = {t.symbol: t for t in trades}
    index = {s: i for i, s in enumerate(inp.symbols)}
    lines = [
        f"Account {inp.account_id} ({inp.account_type}), value {_usd(inp.value_usd)}, cash "
        f"{_usd(inp.cash_usd)} (reserve {_usd(inp.cash_reserve_usd)}): {len(orders)} order(s), "
        f"est. cost {_usd(proposal.est_cost_usd)}, est. tax {_usd(proposal.est_tax_usd)}.",
    ]
    if risk is not None:
        measured = ""  # score against tolerance and 1-day 95 % VaR, when the event carries them
        if risk.pre_score is not None and risk.post_score is not None:
            measured += f"; risk score (1-99) {risk.pre_score} -> {risk.post_score}"
            if risk.tolerance_score is not None:
                side = "above" if risk.post_score > risk.tolerance_score else "within"
                measured += f", {side} the client's tolerance of {risk.tolerance_score}"
        if risk.pre_var_95_1d_usd is not None and risk.post_var_95_1d_usd is not None:
            change = risk.post_var_95_1d_usd - risk.pre_var_95_1d_usd
            measured += (f"; 1-day 95% VaR {_usd(risk.pre_var_95_1d_usd)} -> "
                         f"{_usd(risk.post_var_95_1d_usd)} ({'+' if change >= 0 else ''}{_usd(change)})")
        elif risk.pre_var_95_1d_pct is not None and risk.post_var_95_1d_pct is not None:
            measured += (f"; 1-day 95% VaR {risk.pre_var_95_1d_pct}% -> {risk.post_var_95_1d_pct}% "
                         "of value")
        if risk.pre_tracking_error_annual_pct is not None and risk.post_tracking_error_annual_pct is not None:
            measured += (f"; tracking error to target {risk.pre_tracking_error_annual_pct}% -> "
                         f"{risk.post_tracking_error_annual_pct}% a year")
        lines.append(f"Risk ({risk.model.name} {risk.model.version}): annualized volatility "
                     f"{risk.pre_vol_annual_pct}% -> {risk.post_vol_annual_pct}%" + measured
                     + (f"; flags: {', '.join(risk.flags)}" if risk.flags else "") + ".")
    if not orders:
        lines.append("No trades: the portfolio is as close to target as its costs, taxes and "
                     "constraints justify.")
    for sym in sorted(orders):
        o = orders[sym]
        i = index[sym]
        pre, post = _weights(proposal, sym)
        target = float(inp.target_weight[i])
        head = (f"{o.side.upper()} {_shares(o.shares)} {sym} @ ~{_usd(o.est_price_usd)} "
                f"({_usd(o.est_notional_usd)}, cost {_usd(o.est_cost_usd)}): weight {_pct(pre)} -> "
                f"{_pct(post)} vs target {_pct(target)} ({100 * (pre - target):+.1f} pp -> "
                f"{100 * (post - target):+.1f} pp).")
        lines.append(head)
        t = by_symbol.get(sym)
        if t is not None:
            parts = [f"{_ADVISOR_NAME[d]} {_signed_usd(v)} ({100 * v / inp.value_usd:+.2f} pp)"
                     for d, v in _toward(t, o.side) if abs(v) >= 0.5]
            if parts:
                lines.append("  Reasons ($ toward this trade): " + "; ".join(parts) + ".")
        for lot_line in _lot_lines(inp, o):
            lines.append("  Lot " + lot_line + ".")
        if wash_sale and sym in wash_sale:
            lines.append(f"  Wash sale: {wash_sale[sym]}.")
        cfs = (counterfactuals or {}).get(sym)
        if cfs:
            lines.append("  Would not trade if: " + "; ".join(_counterfactual_text(c) for c in cfs) + ".")
    untouched = []
    for j in np.flatnonzero(inp.restricted):
        sym = inp.symbols[j]
        t = by_symbol.get(sym)
        effect = t.contributions_usd.get("restrictions", 0.0) if t is not None else 0.0
        if abs(effect) >= 0.5:
            held = "a sale" if effect > 0 else "a purchase"
            sym = f"{sym} (the restriction holds back {held} of {_usd(abs(effect), cents=False)})"
        untouched.append(sym)
    if untouched:
        lines.append(f"Restricted, not traded: {', '.join(untouched)}.")
    never = [inp.symbols[j] for j in np.flatnonzero(inp.never_buy)]
    if never:
        lines.append(f"Never bought (account instruction): {', '.join(never)}.")
    screened = [inp.symbols[j] for j in np.flatnonzero(inp.esg_excluded)]
    if screened:
        effects = []
        for sym in screened:
            t = by_symbol.get(sym)
            effect = t.contributions_usd.get("esg", 0.0) if t is not None else 0.0
            effects.append(f"{sym} (the screen accounts for {_signed_usd(effect)} of its trade)"
                           if abs(effect) >= 0.5 else sym)
        lines.append(f"ESG screen, never bought, target 0: {', '.join(effects)}.")
    for note in getattr(proposal, "notes", ()):
        lines.append(f"Note: {note}.")
    solver = getattr(proposal, "solver", None)
    if solver is not None and solver.optimizer_version != OPTIMIZER_VERSION:
        lines.append(f"Note: proposed by optimizer {solver.optimizer_version}, explained with "
                     f"{OPTIMIZER_VERSION}; the attribution is of this version's solution.")
    return "\n".join(lines)


def client_narrative(inp: RebalanceInput, proposal: Any, trades: Sequence[TradeExplanation],
                     risk: RiskAssessed | None, *,
                     counterfactuals: Mapping[str, Sequence[Counterfactual]] | None = None) -> str:
    orders = _order_map(proposal.orders)
    by_symbol = {t.symbol: t for t in trades}
    if not orders:
        return ("We reviewed your account and suggest no changes right now: it is close enough "
                "to your plan that trading would cost more than it helps.")
    lines = [f"We suggest {len(orders)} change{'s' if len(orders) != 1 else ''} to your account."]
    index = {s: i for i, s in enumerate(inp.symbols)}
    for sym in sorted(orders):
        o = orders[sym]
        i = index[sym]
        verb, noun = ("Sell", "sale") if o.side == "sell" else ("Buy", "purchase")
        lines.append(f"{verb} {_shares(o.shares)} shares of {sym} (about "
                     f"{_usd(o.est_notional_usd, cents=False)}).")
        pre, _ = _weights(proposal, sym)
        target = float(inp.target_weight[i])
        if o.side == "sell" and pre > target + 0.005:
            lines.append(f"Your portfolio holds more {sym} than your plan calls for.")
        elif o.side == "buy" and pre < target - 0.005:
            lines.append(f"Your portfolio holds less {sym} than your plan calls for.")
        t = by_symbol.get(sym)
        if t is None:
            continue
        notional = max(abs(t.trade_usd), 1e-9)
        ranked = _toward(t, o.side)
        pro = [d for d, v in ranked if v > 0 and v >= MAIN_REASON_SHARE * notional]
        con = [d for d, v in ranked if v < 0 and -v >= MAIN_REASON_SHARE * notional
               and (d, o.side) in _CLIENT_HELD_BACK]
        if pro:
            reasons = list(dict.fromkeys(_CLIENT_REASON[(d, o.side)] for d in pro[:2]))
            lines.append(f"The main reason{'s' if len(reasons) > 1 else ''} for this {noun}: "
                         + " and ".join(reasons) + ".")
        if con:
            lines.append(f"We {o.side} less than we otherwise would "
                         f"{_CLIENT_HELD_BACK[(con[0], o.side)]}.")
        price = [c for c in (counterfactuals or {}).get(sym, ()) if c.parameter == "price"
                 and c.threshold is not None and c.until is None and c.change_pct is not None]
        if price:
            move = "lower" if price[0].change_pct < 0 else "higher"  # type: ignore[operator]
            lines.append(f"Had the price of {sym} been about {abs(price[0].change_pct):.1f}% "  # type: ignore[arg-type]
                         f"{move}, we would not suggest this {noun}.")
    tax = float(proposal.est_tax_usd)
    if tax < 0:
        lines.append(f"These sales realize losses that may lower your taxes by about {_usd(-tax, cents=False)}.")
    elif tax > 0:
        lines.append(f"These sales realize gains that may cost about {_usd(tax, cents=False)} in taxes.")
    lines.append(f"Estimated trading costs: about {_usd(proposal.est_cost_usd, cents=False)}.")
    if any(inp.restricted):
        lines.append("Holdings you asked us not to trade stay as they are.")
    if any(inp.esg_excluded):
        lines.append("We do not buy companies your values screen excludes.")
    if risk is not None:
        pre, post = float(risk.pre_vol_annual_pct), float(risk.post_vol_annual_pct)
        trend = ("a little less than" if post < pre - 0.05 else
                 "a little more than" if post > pre + 0.05 else "about as much as")
        lines.append(f"After these changes your portfolio should move up and down {trend} before.")
    return " ".join(lines)

