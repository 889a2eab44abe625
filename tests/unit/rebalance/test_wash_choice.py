"""The wash-sale choice's exact shortcut and the canonical lot split, checked against the
procedure they shortcut (both claim to change no optimum)."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.rebalance import DEFAULT_TUNING, from_snapshot, propose
from trimtab.rebalance import solve as solve_module
from trimtab.rebalance.drivers import validate_weights
from trimtab.rebalance.objective import evaluate
from trimtab.rebalance.solve import (
    Bans,
    _choice_groups,
    _Run,
    canonical_lot_split,
    shape_of,
    solve_continuous,
)

from .conftest import drifted_account, exact_best, make_snapshot

#: Weights under which harvesting earns nothing net: the shortcut applies to every loss lot.
NO_HARVEST = {"drift": 1.0, "cost": 1.0, "tax": 0.0, "cash": 1e-3, "restrictions": 1.0}


def _wash_conflict(inp, sell: np.ndarray, buy: np.ndarray) -> bool:  # type: ignore[no-untyped-def]
    loss_sold = np.bincount(inp.lot_security, weights=sell * (inp.lot_gain_usd_per_share < 0),
                            minlength=inp.n_securities)
    groups = np.array(inp.groups, dtype=object)
    return bool(set(groups[loss_sold > 1e-9]) & set(groups[buy > 1e-9]))


@pytest.mark.parametrize("seed", range(8))
def test_the_shortcut_never_does_worse_than_the_full_choice(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = from_snapshot(drifted_account(16, seed=100 + seed, gains=True, reserve=2_000, lots_per_security=3))
    weights = validate_weights(NO_HARVEST)
    run = _Run(inp, weights, DEFAULT_TUNING, shape_of(inp))
    assert not _choice_groups(run, Bans()).names, "no loss lot earns anything: no group faces the choice"
    fast = solve_continuous(inp, weights)
    assert fast.solves == 1
    assert not _wash_conflict(inp, fast.sell_shares, fast.buy_shares)

    # The full procedure: every group with a sellable loss lot and a buyable member decides.
    monkeypatch.setattr(solve_module, "lin_sell_per_lot", lambda inp, w, t: np.full(inp.n_lots, -1.0))
    full = solve_continuous(inp, weights)
    if full.solves == 1:  # no group had both: nothing to compare
        return
    # The relaxation is optimal when it has no conflict; the full choice is a heuristic over
    # restricted problems, so it can only match or lose (up to solver tolerance).
    assert fast.objective <= full.objective + 1e-9 * max(1.0, abs(full.objective))


@pytest.mark.parametrize("seed", range(4))
def test_canonical_split_keeps_every_term_and_fills_in_rank_order(seed: int) -> None:
    inp = from_snapshot(drifted_account(10, seed=200 + seed, gains=False, lots_per_security=3))
    weights = validate_weights({**NO_HARVEST, "tax": 1.0})
    sol = solve_continuous(inp, weights)
    rng = np.random.default_rng(seed)
    # Any other split of the same per-class totals (here: random) maps to the same canonical one.
    other = sol.sell_shares.copy()
    for i in range(inp.n_securities):
        lots = inp.lots_of(i)
        total = other[lots].sum()
        if total <= 0 or len(lots) < 2:
            continue
        share = rng.dirichlet(np.ones(len(lots))) * total
        if (share <= inp.lot_shares[lots]).all():
            other[lots] = share
    sellable = np.ones(inp.n_lots, dtype=bool)
    again = canonical_lot_split(inp, other, sellable)
    np.testing.assert_allclose(again, sol.sell_shares, atol=1e-9)
    a = evaluate(inp, weights, sol.sell_shares, sol.buy_shares, DEFAULT_TUNING)
    b = evaluate(inp, weights, other, sol.buy_shares, DEFAULT_TUNING)
    assert a["total"] == pytest.approx(b["total"], abs=1e-12)
    for i in range(inp.n_securities):  # rank order: a lot is sold only once the earlier ones are whole
        lots = inp.lots_of(i)
        sold = sol.sell_shares[lots]
        for k in range(1, len(lots)):
            if sold[k] > 1e-9:
                assert sold[k - 1] >= inp.lot_shares[lots[k - 1]] - 1e-9


@pytest.mark.parametrize("seed", [505, 508, 511, 300 + 5, 300 + 8, 300 + 11])
def test_the_wash_sale_choice_finds_the_best_assignment_on_small_accounts(seed: int) -> None:
    # Harvest-first with "keep" flips only where the deficit's drift cost beats the harvest's
    # benefit: on these accounts (5-8 groups facing the choice) it matches the enumeration of
    # all 2^G assignments. Before the estimate (all harvested groups below target flipped at
    # once) it missed on four of these six, by up to 2e-3 of the account.
    inp = from_snapshot(drifted_account(8 + seed % 5, seed=seed, gains=True, reserve=2_000,
                                        lots_per_security=2 + seed % 2))
    weights = validate_weights({"drift": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3, "restrictions": 1.0})
    sol = solve_continuous(inp, weights)
    assert sol.objective <= exact_best(inp, weights) + 1e-9


def test_a_group_started_in_keep_still_harvests_when_only_its_loss_can_raise_the_reserve() -> None:
    # One loss lot, below target (so the estimate starts it in "keep": buy more, sell no loss),
    # but the reserve can only be raised by selling it: the first solve is infeasible and the
    # resolution must start again from "harvest" instead of calling the account infeasible.
    snap = make_snapshot(prices={"AA": 5.0}, holdings={"AA": [(1, 5.62, 1)]}, targets={"AA": 0.9375},
                         cash=1.0, reserve=3.5)
    p = propose(snap)
    assert [(o.symbol, o.side, o.shares) for o in p.orders] == [("AA", "sell", 1)]


def test_a_substitute_pair_that_both_face_the_choice_swaps_in_one_solve() -> None:
    # VTI and ITOT are substitutes (one substitute group, two wash groups), both held at a loss:
    # VTI's lot loses $3,000 (worth 0.37 x 3,000 = $1,110 of tax), ITOT's $250. Harvesting both
    # would ban every buy of the group and lose its exposure; the carrier rule starts ITOT (the
    # smaller benefit) in "keep", so the first solve already is the swap: VTI's loss harvested,
    # ITOT bought with the proceeds. Before the rule the first solve harvested both and a
    # second one flipped ITOT back.
    from trimtab.rebalance import RebalanceContext, SecurityInfo

    snap = make_snapshot(
        prices={"VTI": 50.0, "ITOT": 25.0, "BND": 100.0},
        holdings={"VTI": [(100, 80.0, 100)], "ITOT": [(200, 26.25, 100)], "BND": [(100, 100.0, 900)]},
        targets={"VTI": 0.25, "ITOT": 0.25, "BND": 0.5}, cash=0.0, half_spread_bps=1.0,
    )
    ctx = RebalanceContext(securities={"VTI": SecurityInfo(substitute_group="us-total"),
                                       "ITOT": SecurityInfo(substitute_group="us-total")})
    inp = from_snapshot(snap, ctx)
    weights = validate_weights({"drift": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3, "restrictions": 1.0})
    sol = solve_continuous(inp, weights)
    assert sol.solves == 1
    vti, itot = inp.symbols.index("VTI"), inp.symbols.index("ITOT")
    assert sol.sell_shares[inp.lots_of(vti)].sum() == pytest.approx(100, abs=1e-6)  # the whole loss lot
    assert sol.sell_shares[inp.lots_of(itot)].sum() == pytest.approx(0, abs=1e-6)
    assert sol.buy_shares[itot] > 150
    assert not _wash_conflict(inp, sol.sell_shares, sol.buy_shares)
    assert sol.objective <= exact_best(inp, weights) + 1e-9


@pytest.mark.parametrize("seed, n", [(301, 8), (305, 8), (305, 10)])
def test_the_sure_flips_and_the_keep_trial_go_in_one_solve(seed: int, n: int) -> None:
    # Accounts where the first solve leaves both a group that sold no loss below target (a
    # "sure" flip) and a harvested group whose deficit costs more than its harvest earns (the
    # "keep" trial): one more solve decides both (two in all, where it took three), and the
    # answer is still the best of every harvest/keep assignment (6-7 groups face the choice).
    inp = from_snapshot(drifted_account(n, seed=seed, gains=True, reserve=2_000, lots_per_security=2))
    weights = validate_weights({"drift": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3, "restrictions": 1.0})
    sol = solve_continuous(inp, weights)
    assert sol.solves == 2
    assert not _wash_conflict(inp, sol.sell_shares, sol.buy_shares)
    assert sol.objective <= exact_best(inp, weights) + 1e-9


@pytest.mark.parametrize("k", [4, 6, 11, 15])
def test_paired_substitutes_find_the_best_assignment_in_one_solve(k: int) -> None:
    # bench/wash_choice.py's "substitutes" accounts: securities paired into substitute groups,
    # each its own wash group, 6-7 groups facing the choice. The carriers make the first solve
    # the best of all 2^G assignments; the rule before them (harvest every group, then flip)
    # missed it on these four by 18-64 bps of the account, in two solves.
    from trimtab.rebalance import RebalanceContext, SecurityInfo

    snap = drifted_account(8 + k % 5, seed=500 + k, gains=True, reserve=2_000, lots_per_security=2 + k % 2)
    symbols = sorted(p.symbol for p in snap.positions)
    ctx = RebalanceContext(securities={s: SecurityInfo(substitute_group=f"G{i // 2}") for i, s in enumerate(symbols)})
    inp = from_snapshot(snap, ctx)
    weights = validate_weights({"drift": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3, "restrictions": 1.0})
    sol = solve_continuous(inp, weights)
    assert sol.solves == 1
    assert not _wash_conflict(inp, sol.sell_shares, sol.buy_shares)
    assert sol.objective <= exact_best(inp, weights) + 1e-9


def _bench_account(seed: int, shared_wash_groups: bool = True):  # type: ignore[no-untyped-def]
    """A benchmark account (bench/optimizer.py) whose first nine securities share wash groups
    three by three (substantially identical), so groups have several members and loss lots
    (unless not `shared_wash_groups`: the benchmark's own account)."""
    from trimtab.rebalance import RebalanceContext
    from trimtab.shared.events import AccountSnapshot

    from .conftest import bench_module

    snap, ctx = bench_module("optimizer").make_account(seed, 20, 3, 4)
    for i, info in enumerate(ctx["securities"].values()):
        if i < 9 and shared_wash_groups:
            info["wash_group"] = f"W{i // 3}"
    return from_snapshot(AccountSnapshot.model_validate(snap), RebalanceContext.from_json(ctx))


@pytest.mark.parametrize("seed", range(6))
def test_the_groups_flat_arrays_agree_with_their_per_group_lists(seed: int) -> None:
    """`_Groups`' one-call reductions (member and loss-lot sums, dot products and tests, the bans
    of an assignment) give what the per-group lists give, group by group, to the last bit (they
    decide ties, and a replay must decide them alike)."""
    inp = _bench_account(seed)
    run = _Run(inp, validate_weights({"drift": 1.0, "risk": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3,
                                      "restrictions": 1.0}), DEFAULT_TUNING, shape_of(inp))
    choice = _choice_groups(run, Bans())
    assert len(choice.names) >= 3 and any(len(m) > 1 for m in choice.members.values())
    rng = np.random.default_rng(seed)
    assert any(len(lots) > 1 for lots in choice.loss_lots.values())
    values, lot_values = rng.normal(size=inp.n_securities), rng.normal(size=inp.n_lots)
    other, lot_other = rng.normal(size=inp.n_securities), rng.normal(size=inp.n_lots)
    flags, lot_flags = values > 0.5, lot_values > 0.5
    every = np.arange(len(choice.names))
    for p, g in enumerate(choice.names):
        members, lots = choice.members[g], choice.loss_lots[g]
        assert choice.member_sum(values)[p] == float(values[members].sum())
        assert choice.member_dot(values, other, every)[p] == float(values[members] @ other[members])
        assert choice.lot_dot(lot_values, lot_other)[p] == float(lot_values[lots] @ lot_other[lots])
        assert choice.member_any(flags)[p] == bool(flags[members].any())
        assert choice.lot_any(lot_flags)[p] == bool(lot_flags[lots].any())
    for _ in range(8):
        harvest = frozenset(g for g in choice.names if rng.random() < 0.5)
        keep = frozenset(choice.names) - harvest
        assert choice.bans(harvest) == Bans(
            no_buy=frozenset(int(i) for g in harvest for i in choice.members[g]),
            no_sell_lots=frozenset(int(lot) for g in keep for lot in choice.loss_lots[g]))
        assert choice.names_of(choice.mask(harvest)) == harvest


def _carriers_per_column(run, choice, benefit):  # type: ignore[no-untyped-def]
    """`solve._carriers` as it was written first: one substitute group (column) at a time."""
    inp, M = run.inp, run.inp.band_membership
    if not M.shape[1] or not choice.names:
        return []
    in_choice = choice.sec_pos >= 0
    restricted = inp.restricted if run.weights["restrictions"] > 0 else np.zeros(inp.n_securities, bool)
    buyable = ~restricted & ~inp.no_buy & ~solve_module.screened_from_buying(inp, run.weights)
    out = []
    for col in range(M.shape[1]):
        secs = np.flatnonzero(M[:, col] > 0)
        if (buyable[secs] & ~in_choice[secs]).any():
            continue
        facing = sorted({inp.groups[int(i)] for i in secs[in_choice[secs] & buyable[secs]]})
        if len(facing) >= 2:
            out.append(min(facing, key=lambda g: (float(benefit[choice.position[g]]), g)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_carriers_and_the_groups_dicts_agree_with_their_per_group_definitions(seed: int) -> None:
    """`_carriers` (all substitute groups at once) picks what a loop over the substitute groups
    picks, ties included; `members` and `loss_lots` are the groups' securities and the loss lots
    that pose the choice."""
    from dataclasses import replace

    inp = _bench_account(seed, shared_wash_groups=seed % 2 == 0)
    rng = np.random.default_rng(seed)
    weights = validate_weights({"drift": 1.0, "risk": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3,
                                "restrictions": 1.0})
    carriers = 0
    for variant in (inp, replace(inp, restricted=rng.random(inp.n_securities) < 0.2),
                    replace(inp, wash_no_buy=rng.random(inp.n_securities) < 0.2)):
        run = _Run(variant, weights, DEFAULT_TUNING, shape_of(variant))
        choice = _choice_groups(run, Bans())
        for benefit in (solve_module._harvest_benefit(run, choice),  # noqa: SLF001
                        np.round(rng.random(len(choice.names)), 1)):  # ties: the name decides
            got = solve_module._carriers(run, choice, benefit)  # noqa: SLF001
            assert got == _carriers_per_column(run, choice, benefit)
            carriers += len(got)
        loss = variant.lot_is_loss & ~variant.no_sell_lot & ~run.restricted[variant.lot_security]
        if variant.tax_budget_usd is None and variant.gain_cap_usd is None:
            loss &= ~variant.lot_alone_in_group | (run.lin < 0)
        groups = np.array(variant.groups, dtype=object)
        for g in choice.names:
            np.testing.assert_array_equal(choice.members[g], np.flatnonzero(groups == g))
            np.testing.assert_array_equal(choice.loss_lots[g], np.flatnonzero(loss & (groups[variant.lot_security] == g)))
    assert carriers or seed % 2 == 0, "the benchmark's own accounts have carriers"


def test_mirrored_substitutes_keep_the_carrier_the_per_group_dot_product_picks() -> None:
    """Two substitutes at one price holding mirrored loss lots earn the same harvest benefit up
    to the last bit of how it is summed: the carrier (`_carriers`, the lower benefit, then the
    name) depends on that bit. Each group's benefit is its loss lots' dot product, as before the
    eleventh session's vectorization (a running sum picked the other security in 33 of 400 such
    accounts, review): found by `/tmp/review-diff/carrier_search.py`, seed 1."""
    from trimtab.rebalance import RebalanceContext, SecurityInfo
    from trimtab.rebalance.drivers import proposal_weights
    from trimtab.rebalance.solve import _harvest_benefit

    prices = {"XAA": 112.13, "YBB": 112.13, "ZCC": 58.37}
    a, b = (303.0, 126.63), (380.0, 176.24)
    snap = make_snapshot(prices=prices, holdings={"XAA": [(*a, 600), (*b, 500)], "YBB": [(*b, 600), (*a, 500)],
                                                  "ZCC": [(400.0, 58.37, 900)]},
                         targets={"XAA": 0.3, "YBB": 0.3, "ZCC": 0.37}, cash=20_000.0, band=0.01)
    ctx = RebalanceContext(securities={"XAA": SecurityInfo(substitute_group="G"),
                                       "YBB": SecurityInfo(substitute_group="G")})
    inp = from_snapshot(snap, ctx)
    run = _Run(inp, validate_weights(proposal_weights(None)), DEFAULT_TUNING, shape_of(inp))
    choice = _choice_groups(run, Bans())
    assert choice.names == ("XAA", "YBB")
    benefit = _harvest_benefit(run, choice)
    for p, g in enumerate(choice.names):
        lots = choice.loss_lots[g]
        assert len(lots) == 2
        assert benefit[p] == -float(np.minimum(run.lin[lots], 0.0) @ inp.lot_weight[lots])
