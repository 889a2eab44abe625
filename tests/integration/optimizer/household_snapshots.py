"""A two-account household for the household what-if tests: the asset-location scenario of
`tests/unit/rebalance/test_household.py` (a taxable account holding a bond fund, an IRA holding
equity, household target 60 % VTI / 40 % BND), with its hand-computed orders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trimtab.shared.events import (
    AccountSnapshot,
    DriftPolicy,
    LotSnapshot,
    PositionSnapshot,
    SecuritySnapshot,
    TaxRates,
)

AS_OF = datetime(2024, 6, 28, 20, 0, tzinfo=UTC)
TODAY = AS_OF.date()
#: symbol -> (price, asset class)
UNIVERSE: dict[str, tuple[str, str]] = {"BND": ("100", "bond"), "VTI": ("250", "equity")}
SIXTY_FORTY = {"VTI": Decimal("0.6"), "BND": Decimal("0.4")}


def snap(account_id: str, account_type: str, holdings: Mapping[str, Sequence[tuple[int, float, int]]], *,
         household_id: str | None, cash: str = "0", reserve: str = "0") -> AccountSnapshot:
    """One account; holdings: symbol -> lots of (shares, basis per share, days held)."""
    positions = []
    for sym, lots in sorted(holdings.items()):
        ls = [LotSnapshot(lot_id=f"{account_id}-{sym}-{k}", shares=Decimal(q),
                          cost_basis_usd_per_share=Decimal(str(b)), acquired_on=TODAY - timedelta(days=d))
              for k, (q, b, d) in enumerate(lots)]
        positions.append(PositionSnapshot(symbol=sym, shares=sum((x.shares for x in ls), Decimal(0)), lots=ls))
    return AccountSnapshot(
        account_id=account_id, household_id=household_id, account_type=account_type,  # type: ignore[arg-type]
        cash_usd=Decimal(cash), cash_reserve_usd=Decimal(reserve), positions=positions, targets={},
        securities=[SecuritySnapshot(symbol=s, price_usd=Decimal(p), asset_class=c, half_spread_bps=Decimal(2))
                    for s, (p, c) in sorted(UNIVERSE.items())],
        policy=DriftPolicy(band_abs=Decimal("0.05")),
        tax_rates=TaxRates(short_term=Decimal("0.37"), long_term=Decimal("0.20")), as_of=AS_OF)


def bond_in_taxable(prefix: str, household_id: str | None) -> tuple[AccountSnapshot, AccountSnapshot]:
    """Taxable: 400 BND at $100 (basis = price, held 800 days). IRA: 240 VTI at $250.
    Household value $100,000 on a 60/40 target: only asset location moves (see the rebalance
    test: taxable sells 400 BND and buys 159 VTI; the IRA sells 159 VTI and buys 397 BND)."""
    return (snap(f"{prefix}-taxable", "taxable", {"BND": [(400, 100.0, 800)]}, household_id=household_id),
            snap(f"{prefix}-ira", "tax_deferred", {"VTI": [(240, 250.0, 800)]}, household_id=household_id))
