"""From the continuous optimum to whole-share orders that pass every constraint again.

1. Sells are floored lot by lot (a lot sold within `whole_lot_tol_shares` of its size is sold
   whole, fractions included); whole shares lost to flooring are given back to the lots the
   solution chose, highest basis first. Buys are floored.
2. Orders under the minimum notional are dropped; if any is, the problem is re-solved with those
   securities fixed at zero (so their cash goes where the optimizer wants it) and rounded again.
3. Every constraint is re-checked on the whole-share orders: no lot oversold, restricted and
   banned trades untouched, no loss sold where the security is bought, turnover, and cash after
   trades and costs at least the reserve. A cash shortfall (flooring sells loses up to a share
   per security) is repaired by trimming the largest buys by the few shares needed (closer to the
   optimum than re-solving without them), then by selling whole shares more from the chosen lots.
   What cannot be repaired raises `InfeasibleProblem("rounding")`: never silent bad orders.
4. The re-check also covers the context's constraints: wash-sale groups and household bans,
   buy-only / sell-only, tax budget and gain cap (a budget overshot by rounding is re-solved
   with a tighter budget), and the withdrawal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .drivers import Tuning
from .errors import InfeasibleProblem, RebalanceError
from .inputs import RebalanceInput
from .objective import linear_cost_weight, trade_weight
from .solve import Bans, ContinuousSolution, _sellable, solve_continuous

#: Continuous shares within this of an integer count as that integer (solver noise)...
SHARE_TOL = 1e-6
#: ...or within this fraction of the account's value: the solver's accuracy is in weight, so on
#: a large account at a low price its noise can exceed a millionth of a share.
WEIGHT_TOL = 1e-7


@dataclass(frozen=True)
class RoundedTrades:
    """Whole-share trades: shares sold per lot (whole lots may be fractional), bought per security."""

    sell_shares: np.ndarray
    buy_shares: np.ndarray
    whole_lot: np.ndarray
    continuous: ContinuousSolution
    #: The continuous solution the final orders were rounded from (after any re-solve).
    final_continuous: ContinuousSolution
    dropped: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    def sold_per_security(self, inp: RebalanceInput) -> np.ndarray:
        return np.bincount(inp.lot_security, weights=self.sell_shares, minlength=inp.n_securities)


def cash_after_usd(inp: RebalanceInput, sell: np.ndarray, buy: np.ndarray) -> float:
    """Cash after the trades and their linear costs (half spread + commission)."""
    return _cash_after(inp, trade_weight(inp, sell, buy), sell, buy)


def _cash_after(inp: RebalanceInput, t: np.ndarray, sell: np.ndarray, buy: np.ndarray) -> float:
    """`cash_after_usd` given the trade in weight `t` (`trade_weight(inp, sell, buy)`)."""
    return inp.cash_usd - inp.value_usd * (float(t.sum()) + linear_cost_weight(inp, sell, buy))


def _floor(x: float, tol: float = SHARE_TOL) -> float:
    return float(math.floor(x + tol))


def share_tolerance(inp: RebalanceInput) -> np.ndarray:
    """Per security: shares within which a continuous amount counts as a whole number."""
    return np.maximum(SHARE_TOL, WEIGHT_TOL * inp.value_usd / inp.price_usd)


def _raise_non_finite(s: np.ndarray, floored: np.ndarray, whole: np.ndarray, buy: np.ndarray) -> None:
    """Fail on non-finite shares as flooring them one by one does (`math.floor`'s ValueError for
    NaN, OverflowError for infinity), in the same order: each lot not sold whole (`floored`: its
    shares plus tolerance), then a lot sold whole at +inf (on the shares missing), then the buys.
    Returns when only lots sold whole have a non-finite `floored` (they are not floored)."""
    for x, w in zip(floored.tolist(), whole.tolist(), strict=True):
        if not w:
            math.floor(x)
    if (s == math.inf).any():
        _floor(math.inf)
    for x in buy.tolist():
        _floor(x)


def _round_once(inp: RebalanceInput, sol: ContinuousSolution, tuning: Tuning
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = sol.sell_shares
    tol = share_tolerance(inp)
    lot_tol = np.maximum(tol[inp.lot_security], tuning.whole_lot_tol_shares)
    # Per lot: sold whole within `lot_tol` of its size, else floored (`_floor(s, lot_tol)`).
    whole = (s >= inp.lot_shares - lot_tol) & (s > SHARE_TOL)
    floored = s + lot_tol
    if not (np.isfinite(floored).all() and np.isfinite(sol.buy_shares).all()):
        _raise_non_finite(s, floored, whole, sol.buy_shares)
    sell = np.where(whole, inp.lot_shares, np.floor(floored))
    chosen_lots = s > SHARE_TOL
    # Whole shares lost to flooring are given back where they add up to at least one, which is
    # rare: a cheap estimate per security (summed in another order) plus a margin far above that
    # order's rounding error (a few ulps of the shares summed) skips the securities where it is
    # certainly below one share: their exact `missing` below is 0 (nothing to give back).
    n = inp.n_securities
    lost = np.bincount(inp.lot_security, weights=s - sell, minlength=n)
    scale = np.bincount(inp.lot_security, weights=np.abs(s) + np.abs(sell), minlength=n)
    maybe = np.zeros(n, dtype=bool)
    maybe[inp.lot_security[chosen_lots]] = True
    maybe &= ~(lost + tol + 1e-9 * (scale + tol + 1.0) < 1.0)  # an overflow (NaN) is not skipped
    for i in np.flatnonzero(maybe).tolist():
        lots = inp.lots_of(i)
        missing = _floor(float(s[lots].sum() - sell[lots].sum()), tol[i])
        chosen = lots[chosen_lots[lots]].tolist()
        # Highest basis first, then the input's lot order: deterministic.
        for lot in sorted(chosen, key=lambda lot: (-inp.lot_basis_usd_per_share[lot], lot)):
            if missing <= 0:
                break
            room = _floor(inp.lot_shares[lot] - sell[lot])
            add = min(room, missing)
            sell[lot] += add
            missing -= add
            whole[lot] = whole[lot] or abs(sell[lot] - inp.lot_shares[lot]) < SHARE_TOL
    buy = np.floor(sol.buy_shares + tol)
    return sell, buy, whole


def _clear_exits(inp: RebalanceInput, sol: ContinuousSolution, sell: np.ndarray, buy: np.ndarray,
                 whole: np.ndarray, bans: Bans, tuning: Tuning, notes: list[str]) -> None:
    """Leaving a target-0 holding (a screen, a security dropped from the model): a lot being sold
    that the optimum leaves with less than one share, or that would keep less than the minimum
    trade, is sold whole, not left as dust; unless that breaks a constraint the orders met
    (turnover, tax budget, gain cap), in which case the lot keeps its remainder."""
    exiting = inp.target_weight == 0
    if not exiting.any():
        return
    s = sol.sell_shares
    rest_of = inp.lot_shares - sell
    # A lot's test reads only its own entries, which only its own turn below changes.
    exits = (exiting[inp.lot_security] & (s > SHARE_TOL) & ~whole & (rest_of > 0)
             & ((inp.lot_shares - s < 1.0) | (rest_of * inp.lot_price_usd < tuning.min_trade_usd)))
    if not exits.any():
        return
    before: set[str] | None = None
    for lot in np.flatnonzero(exits).tolist():
        i = inp.lot_security[lot]
        rest = rest_of[lot]
        if before is None:
            before = set(check(inp, sell, buy, bans))
        kept = sell[lot]
        sell[lot], whole[lot] = inp.lot_shares[lot], True
        if set(check(inp, sell, buy, bans)) - before:
            sell[lot], whole[lot] = kept, False
        else:
            notes.append(f"{inp.symbols[i]}: exit sold whole ({_floor(rest):.0f} share(s) more)")


def _small_orders(inp: RebalanceInput, sell: np.ndarray, buy: np.ndarray, min_usd: float) -> list[int]:
    sold = np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
    notional = (sold + buy) * inp.price_usd
    return np.flatnonzero((notional > 0) & (notional < min_usd)).tolist()


def _repair_cash(inp: RebalanceInput, sol: ContinuousSolution, sell: np.ndarray, buy: np.ndarray,
                 whole: np.ndarray, min_usd: float, notes: list[str],
                 sellable: np.ndarray | None = None) -> None:
    """Trim buys, then sell whole shares more, until cash after trades covers the reserve: first
    of the lots the optimum sells, then (when those are exhausted: the optimum may have sold a
    fraction of a share of a lot, dropped as dust) of the other `sellable` lots, those without a
    loss first (no wash-sale question), least tax first. The re-check that follows still refuses
    a result that breaks a rule (a loss sold where the household buys)."""
    def short() -> float:
        return inp.cash_reserve_usd + inp.withdrawal_usd - cash_after_usd(inp, sell, buy)

    if short() <= 1e-6:
        return
    for i in sorted(np.flatnonzero(buy > 0), key=lambda i: (-buy[i] * inp.price_usd[i], i)):
        gap = short()
        if gap <= 1e-6:
            break
        per_share = inp.price_usd[i] * (1 + inp.cost_rate[i])
        cut = min(buy[i], float(math.ceil(gap / per_share - 1e-12)))
        buy[i] -= cut
        if 0 < buy[i] * inp.price_usd[i] < min_usd:
            buy[i] = 0.0
        notes.append(f"{inp.symbols[i]}: buy trimmed so cash stays above the reserve")
    if short() <= 1e-6:
        return
    # Selling more raises tax: lots with the least tax per dollar first (losses, then high basis).
    candidates = [lot for lot in range(inp.n_lots) if sol.sell_shares[lot] > SHARE_TOL and not whole[lot]]

    def order(lots: list[int]) -> list[int]:
        return sorted(lots, key=lambda lot: (inp.lot_tax_per_weight[lot], -inp.lot_basis_usd_per_share[lot], lot))

    chosen = set(candidates)
    more = [] if sellable is None else [
        lot for lot in range(inp.n_lots)
        if sellable[lot] and lot not in chosen and sell[lot] < inp.lot_shares[lot] - SHARE_TOL]
    gains = [lot for lot in more if inp.lot_gain_usd_per_share[lot] >= 0]
    losses = [lot for lot in more if inp.lot_gain_usd_per_share[lot] < 0]
    for lot in order(candidates) + order(gains) + order(losses):
        gap = short()
        if gap <= 1e-6:
            break
        p = inp.lot_price_usd[lot]
        per_share = p * (1 - inp.cost_rate[inp.lot_security[lot]])
        room = _floor(inp.lot_shares[lot] - sell[lot])
        add = min(room, float(math.ceil(gap / per_share - 1e-12)))
        if add > 0:
            sell[lot] += add
            notes.append(f"{inp.symbols[inp.lot_security[lot]]}: sale rounded up to keep the cash reserve")


def check(inp: RebalanceInput, sell: np.ndarray, buy: np.ndarray, bans: Bans,
          restrictions_on: bool = True) -> list[str]:
    """Every hard constraint on whole-share trades; returns the violations (empty when valid)."""
    bad: list[str] = []
    if (sell < -SHARE_TOL).any() or (buy < -SHARE_TOL).any():
        bad.append("negative trade")
    if (sell > inp.lot_shares + SHARE_TOL).any():
        bad.append("lot oversold")
    sold = np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
    bought, selling, sold_any = buy > 0, sell > 0, sold > 0
    if restrictions_on and (sold_any | bought)[inp.restricted].any():
        bad.append("restricted security traded")
    if restrictions_on and bought[inp.never_buy].any():
        bad.append("never-buy security bought")
    if bought[inp.esg_excluded].any():
        bad.append("ESG-excluded security bought")
    if any(buy[i] > 0 for i in bans.no_buy) or any(sell[lot] > 0 for lot in bans.no_sell_lots):
        bad.append("banned trade")
    loss_sold = np.bincount(inp.lot_security, weights=sell * (inp.lot_gain_usd_per_share < 0),
                            minlength=inp.n_securities)
    # Wash-sale groups by code: codes follow the sorted group names.
    codes = inp.group_code
    washed = set(codes[loss_sold > 0].tolist()) & set(codes[bought].tolist())
    if washed:
        bad.append(f"wash sale: loss sold and bought in group {[inp.group_names[c] for c in sorted(washed)]}")
    if bought[inp.no_buy].any() or selling[inp.no_sell_lot].any():
        bad.append("wash sale against the household's last 30 days")
    if inp.mode == "buy_only" and selling.any():
        bad.append("sale in a buy-only account")
    if inp.mode == "sell_only" and bought.any():
        bad.append("buy in a sell-only account")
    tax_usd = float(inp.lot_tax_rate @ (sell * inp.lot_gain_usd_per_share))
    if inp.tax_budget_usd is not None and tax_usd > inp.tax_budget_usd + 0.01:
        bad.append(f"tax ${tax_usd:,.2f} above the budget ${inp.tax_budget_usd:,.2f}")
    gain_usd = float(sell @ inp.lot_gain_usd_per_share) if inp.account_type == "taxable" else 0.0
    if inp.gain_cap_usd is not None and gain_usd > inp.gain_cap_usd + 0.01:
        bad.append(f"net gain ${gain_usd:,.2f} above the cap ${inp.gain_cap_usd:,.2f}")
    if (sold_any & bought).any():
        bad.append("a security both bought and sold")
    t = trade_weight(inp, sell, buy)
    if inp.max_turnover is not None:
        turnover = float(np.abs(t).sum())
        if turnover > inp.max_turnover + 1e-9:
            bad.append(f"turnover {turnover:.6f} above {inp.max_turnover}")
    cash = _cash_after(inp, t, sell, buy)
    need = inp.cash_reserve_usd + inp.withdrawal_usd
    if cash < need - 1e-6:
        bad.append(f"cash after trades ${cash:,.2f} below the reserve plus withdrawal ${need:,.2f}")
    return bad


def _round_and_repair(inp: RebalanceInput, weights: Mapping[str, float], continuous: ContinuousSolution,
                      tuning: Tuning) -> tuple[np.ndarray, np.ndarray, np.ndarray, ContinuousSolution,
                                               Bans, list[str], list[str]]:
    notes: list[str] = []
    dropped: list[str] = []
    sol = continuous
    bans = continuous.bans
    for _ in range(inp.n_securities + 1):
        sell, buy, whole = _round_once(inp, sol, tuning)
        small = _small_orders(inp, sell, buy, tuning.min_trade_usd)
        if not small:
            break
        fix = Bans(no_buy=frozenset(small),
                   no_sell_lots=frozenset(int(lot) for lot in np.flatnonzero(np.isin(inp.lot_security, small))))
        try:
            resolved = solve_continuous(inp, weights, tuning=tuning, bans=bans | fix)
        except InfeasibleProblem:
            # Dropping them leaves no feasible trade list (e.g. a small sale funds the reserve):
            # keep the small orders rather than refuse the proposal.
            notes.append(f"kept orders under ${tuning.min_trade_usd:,.0f} needed for feasibility: "
                         f"{[inp.symbols[i] for i in small]}")
            break
        dropped.extend(inp.symbols[i] for i in small)
        bans = resolved.bans | fix
        sol = resolved
    else:  # pragma: no cover - bans grow every round, so this cannot loop past n
        raise InfeasibleProblem("rounding", "minimum-notional rounding did not settle")
    _repair_cash(inp, sol, sell, buy, whole, tuning.min_trade_usd, notes,
                 sellable=_sellable(inp, weights, bans))
    _clear_exits(inp, sol, sell, buy, whole, bans, tuning, notes)
    return sell, buy, whole, sol, bans, dropped, notes


#: Re-solves allowed to bring whole-share orders back under a tax budget or gain cap.
BUDGET_RETRIES = 3


def round_trades(
    inp: RebalanceInput,
    weights: Mapping[str, float],
    continuous: ContinuousSolution,
    tuning: Tuning,
) -> RoundedTrades:
    """Whole-share trades from `continuous` (solved under `weights`), re-checked and repaired.

    Rounding a sale up to keep the cash reserve can realize a little more gain than a binding tax
    budget or gain cap allows; then the problem is re-solved with the budget tightened by the
    overshoot (and a margin) and rounded again, at most `BUDGET_RETRIES` times.
    """
    solve_inp, sol = inp, continuous
    for attempt in range(BUDGET_RETRIES + 1):
        sell, buy, whole, final, bans, dropped, notes = _round_and_repair(solve_inp, weights, sol, tuning)
        problems = check(inp, sell, buy, bans)
        over = [p for p in problems if "above the budget" in p or "above the cap" in p]
        if not problems or len(over) != len(problems) or attempt == BUDGET_RETRIES:
            break
        tax_usd = float(inp.lot_tax_rate @ (sell * inp.lot_gain_usd_per_share))
        gain_usd = float(sell @ inp.lot_gain_usd_per_share)
        changes = {}
        if inp.tax_budget_usd is not None and tax_usd > inp.tax_budget_usd:
            changes["tax_budget_usd"] = solve_inp.tax_budget_usd - 1.5 * (tax_usd - inp.tax_budget_usd) - 1.0
        if inp.gain_cap_usd is not None and gain_usd > inp.gain_cap_usd:
            changes["gain_cap_usd"] = solve_inp.gain_cap_usd - 1.5 * (gain_usd - inp.gain_cap_usd) - 1.0
        solve_inp = replace(solve_inp, **changes)
        try:
            sol = solve_continuous(solve_inp, weights, tuning=tuning, bans=continuous.bans)
        except InfeasibleProblem:
            break
    if problems:
        raise InfeasibleProblem("rounding", "whole-share orders fail the re-check: " + "; ".join(problems),
                                account_id=inp.account_id, violations=problems)
    if solve_inp is not inp:
        notes.append("tax budget / gain cap tightened for rounding")
    if np.isnan(sell).any() or np.isnan(buy).any():  # pragma: no cover - defensive
        raise RebalanceError("rounding produced NaN shares")
    return RoundedTrades(sell_shares=sell, buy_shares=buy, whole_lot=whole, continuous=continuous,
                         final_continuous=final, dropped=tuple(dropped), notes=tuple(notes))
