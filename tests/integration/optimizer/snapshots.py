"""Small account snapshots for the optimizer's integration tests: a few securities, a few lots,
targets the holdings are clearly off from (so a rebalance has something to do)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from trimtab.shared.events import (
    AccountSnapshot,
    DriftPolicy,
    LotSnapshot,
    PositionSnapshot,
    SecuritySnapshot,
)

PRICES = {"VTI": Decimal("250"), "VXUS": Decimal("60"), "BND": Decimal("72"), "VNQ": Decimal("85")}


def drifted(account_id: str, *, automation: str = "advisor_approval",
            cash_usd: str = "1000", cash_reserve_usd: str = "0") -> AccountSnapshot:
    """About 70 % VTI against a 40 % target: the rebalance sells VTI and buys the rest."""
    positions = [
        PositionSnapshot(symbol="VTI", shares=Decimal("280"), lots=[
            LotSnapshot(lot_id=f"{account_id}-vti-1", shares=Decimal("180"),
                        cost_basis_usd_per_share=Decimal("190"), acquired_on=date(2020, 3, 2)),
            LotSnapshot(lot_id=f"{account_id}-vti-2", shares=Decimal("100"),
                        cost_basis_usd_per_share=Decimal("270"), acquired_on=date(2023, 6, 1)),
        ]),
        PositionSnapshot(symbol="VXUS", shares=Decimal("200"), lots=[
            LotSnapshot(lot_id=f"{account_id}-vxus-1", shares=Decimal("200"),
                        cost_basis_usd_per_share=Decimal("55"), acquired_on=date(2021, 1, 4))]),
        PositionSnapshot(symbol="BND", shares=Decimal("150"), lots=[
            LotSnapshot(lot_id=f"{account_id}-bnd-1", shares=Decimal("150"),
                        cost_basis_usd_per_share=Decimal("80"), acquired_on=date(2022, 2, 1))]),
    ]
    return AccountSnapshot(
        account_id=account_id, household_id=f"hh-{account_id}", account_type="taxable",
        model_id="balanced", cash_usd=Decimal(cash_usd), cash_reserve_usd=Decimal(cash_reserve_usd),
        positions=positions,
        targets={"VTI": Decimal("0.40"), "VXUS": Decimal("0.20"), "BND": Decimal("0.30"),
                 "VNQ": Decimal("0.08")},
        securities=[SecuritySnapshot(symbol=s, price_usd=p, asset_class="equity" if s != "BND" else "bond")
                    for s, p in PRICES.items()],
        policy=DriftPolicy(band_abs=Decimal("0.05"), automation=automation),  # type: ignore[arg-type]
        as_of=datetime(2024, 5, 1, 21, 0, tzinfo=UTC),
    )


def on_target(account_id: str, *, automation: str = "automatic") -> AccountSnapshot:
    """Holdings already at target (within rounding): nothing worth trading."""
    positions = [
        PositionSnapshot(symbol="VTI", shares=Decimal("40"), lots=[
            LotSnapshot(lot_id=f"{account_id}-vti-1", shares=Decimal("40"),
                        cost_basis_usd_per_share=Decimal("200"), acquired_on=date(2020, 3, 2))]),
        PositionSnapshot(symbol="BND", shares=Decimal("125"), lots=[
            LotSnapshot(lot_id=f"{account_id}-bnd-1", shares=Decimal("125"),
                        cost_basis_usd_per_share=Decimal("70"), acquired_on=date(2020, 3, 2))]),
    ]
    # 40 * 250 = 10,000 and 125 * 72 = 9,000 of 19,000 + 0 cash.
    return AccountSnapshot(
        account_id=account_id, cash_usd=Decimal("0"), positions=positions,
        targets={"VTI": Decimal("10000") / Decimal("19000"), "BND": Decimal("9000") / Decimal("19000")},
        securities=[SecuritySnapshot(symbol=s, price_usd=PRICES[s]) for s in ("VTI", "BND")],
        policy=DriftPolicy(automation=automation),  # type: ignore[arg-type]
        as_of=datetime(2024, 5, 1, 21, 0, tzinfo=UTC),
    )


def unraisable_reserve(account_id: str) -> AccountSnapshot:
    """A cash reserve larger than the whole account: no trade list can meet it."""
    return drifted(account_id, cash_reserve_usd="10000000")
