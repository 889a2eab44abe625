"""What the drift monitor tells the optimizer beyond the snapshot (DriftDetected.context)."""

from __future__ import annotations

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
