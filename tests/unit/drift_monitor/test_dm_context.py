"""What the drift monitor tells the optimizer beyond the snapshot (DriftDetected.context)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

from trimtab.drift_monitor.book import Book
from trimtab.drift_monitor.snapshots import optimizer_context
from trimtab.rebalance import RebalanceContext
from trimtab.shared.events import OptimizerContext


def _book(account_policy: dict | None, model_policy: dict | None = None) -> Book:
    return Book(account=SimpleNamespace(policy=account_policy), lots=[], model_targets={},
                model_policy=model_policy, withdrawal_usd=Decimal("700"))


def test_a_policys_tax_limit_becomes_the_optimizers_tax_budget() -> None:
    ctx = optimizer_context(_book({"max_tax_usd": "2500.00"}))
    assert ctx == OptimizerContext(tax_budget_usd=Decimal("2500.00"))
    # Inherited from the model, overridden by the account.
    assert optimizer_context(_book(None, {"max_tax_usd": "900"})) == OptimizerContext(tax_budget_usd=Decimal(900))
    assert optimizer_context(_book({"max_tax_usd": "10"}, {"max_tax_usd": "900"})).tax_budget_usd == 10  # type: ignore[union-attr]
    # What the library reads: a budget, no withdrawal on top (open withdrawals are in the reserve).
    lib = RebalanceContext.from_json(ctx.model_dump(mode="json"))  # type: ignore[union-attr]
    assert lib.tax_budget_usd == 2500.0 and lib.withdrawal_usd == 0.0


def test_no_limit_no_context() -> None:
    assert optimizer_context(_book({"band_abs": "0.05"})) is None
    assert optimizer_context(_book(None)) is None


def _screened_book() -> Book:
    from datetime import date

    lot = SimpleNamespace(symbol="XOM", lot_id="L1", shares=Decimal("20"),
                          cost_basis_usd_per_share=Decimal("90"), acquired_on=date(2024, 1, 2))
    account = SimpleNamespace(
        account_id="E1", household_id=None, account_type="taxable", model_id="m", cash_usd=Decimal("1000"),
        cash_reserve_usd=Decimal("0"), restricted=["TOB"], never_buy=["NB", "TOB"], esg_excluded=["XOM"],
        custom_targets=None, policy=None, tax_short_term=Decimal("0.37"), tax_long_term=Decimal("0.2"))
    return Book(account=account, lots=[lot], model_targets={"AAA": Decimal("0.5"), "XOM": Decimal("0.2"),
                                                             "NB": Decimal("0.1"), "BBB": Decimal("0.2")},
                model_policy=None, withdrawal_usd=Decimal("0"))


PRICED_AT = datetime(2024, 5, 1, 20, 59, 58, tzinfo=UTC)


def _prices(symbols: list[str]) -> dict:
    return {s: SimpleNamespace(price_usd=Decimal("100"), asset_class="equity", half_spread_bps=Decimal("2"),
                               commission_usd_per_share=Decimal("0"), as_of=PRICED_AT) for s in symbols}


def test_the_snapshot_carries_the_screens_and_the_targets_before_the_esg_screen() -> None:
    from trimtab.drift_monitor.snapshots import build_snapshot
    from trimtab.rebalance import from_snapshot

    book = _screened_book()
    snap = build_snapshot(book, _prices(["AAA", "BBB", "XOM", "NB"]), datetime(2025, 3, 3, tzinfo=UTC))
    assert snap.esg_excluded == ["XOM"] and snap.never_buy == ["NB"]  # TOB is restricted already
    # each price with its own time (the optimizer's price-move expiry compares quotes with it)
    assert {s.price_as_of for s in snap.securities} == {PRICED_AT}
    # Effective targets drop XOM and NB; before the ESG screen only NB is dropped (0.9 spread).
    assert set(snap.targets) == {"AAA", "BBB"}
    assert snap.targets_before_esg == {"AAA": Decimal("0.5555555555"), "BBB": Decimal("0.2222222222"),
                                       "XOM": Decimal("0.2222222222")}
    inp = from_snapshot(snap)  # the optimizer accepts it
    assert inp.esg_excluded[inp.symbols.index("XOM")] and inp.never_buy.sum() == 0  # NB not in the universe
    # A symbol the lifted screen would hold has no price here: the snapshot leaves the targets out.
    no_xom_price = _screened_book()
    no_xom_price.lots.clear()
    snap2 = build_snapshot(no_xom_price, _prices(["AAA", "BBB"]), datetime(2025, 3, 3, tzinfo=UTC))
    assert snap2.esg_excluded == ["XOM"] and snap2.targets_before_esg is None
