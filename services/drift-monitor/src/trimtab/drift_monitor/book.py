"""Reading and writing the book in PostgreSQL: models, accounts with their lots, prices.

Every function takes the caller's session (the caller owns the transaction) and a tenant id, and
every statement is filtered by that tenant. Writes to an account bump its `revision` and
`changed_xid`, which is how the drift engine learns that a row changed (see models.py, cache.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, delete, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .domain.ledger import Lot
from .domain.rules import AccountState, Policy, effective_targets, resolve_policy
from .models import (
    CURRENT_XID,
    accounts,
    households,
    lots,
    model_portfolios,
    model_targets,
    prices,
    withdrawals,
)
from .schemas import AccountIn, LotIn

#: Rows per statement when loading many accounts by id (keeps bind-parameter lists bounded).
CHUNK = 2_000


@dataclass(frozen=True)
class Book:
    """One account as stored: its row, its lots, its model's targets and policy, open withdrawals."""

    account: Row[Any]
    lots: list[Lot]
    model_targets: dict[str, Decimal]
    model_policy: dict[str, Any] | None = None
    withdrawal_usd: Decimal = Decimal(0)

    @property
    def account_id(self) -> str:
        return str(self.account.account_id)

    @property
    def policy(self) -> Policy:
        return resolve_policy(self.model_policy, self.account.policy)

    @property
    def excluded(self) -> frozenset[str]:
        a = self.account
        return frozenset(a.never_buy or []) | frozenset(a.esg_excluded or [])

    @property
    def targets(self) -> dict[str, Decimal]:
        """Effective targets: custom or the model's, exclusions spread over the rest."""
        custom = self.account.custom_targets
        base = {k: Decimal(str(v)) for k, v in custom.items()} if custom is not None else self.model_targets
        return effective_targets(base, self.excluded)

    def state(self) -> AccountState:
        a = self.account
        return AccountState(cash_usd=a.cash_usd, shares=self.shares_by_symbol(), targets=self.targets,
                            policy=self.policy, cash_reserve_usd=a.cash_reserve_usd,
                            never_trade=frozenset(a.restricted or []), withdrawal_usd=self.withdrawal_usd)

    def shares_by_symbol(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for lot in self.lots:
            out[lot.symbol] = out.get(lot.symbol, Decimal(0)) + lot.shares
        return out


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), CHUNK):
        yield list(ids[i:i + CHUNK])


def to_lot(r: Any) -> Lot:
    return Lot(r.lot_id, r.symbol, r.shares, r.cost_basis_usd_per_share, r.acquired_on)


def lot_from_in(lot: LotIn) -> Lot:
    return Lot(lot.lot_id, lot.symbol, lot.shares, lot.cost_basis_usd_per_share, lot.acquired_on)


def bump() -> dict[str, Any]:
    """Column values every account update carries."""
    return {"revision": accounts.c.revision + 1, "updated_at": func.now(), "changed_xid": CURRENT_XID}


# ---------------------------------------------------------------- models


async def model_targets_of(s: AsyncSession, tenant: str, model_ids: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    ids = sorted(set(model_ids))
    out: dict[str, dict[str, Decimal]] = {m: {} for m in ids}
    if not ids:
        return out
    rows = await s.execute(select(model_targets).where(
        model_targets.c.tenant_id == tenant, model_targets.c.model_id.in_(ids)))
    for r in rows:
        out[r.model_id][r.symbol] = r.weight
    return out


async def existing_model_ids(s: AsyncSession, tenant: str, model_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(model_ids))
    if not ids:
        return set()
    rows = await s.execute(select(model_portfolios.c.model_id).where(
        model_portfolios.c.tenant_id == tenant, model_portfolios.c.model_id.in_(ids)))
    return set(rows.scalars())


async def model_policies_of(s: AsyncSession, tenant: str, model_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    rows = await s.execute(select(model_portfolios.c.model_id, model_portfolios.c.policy).where(
        model_portfolios.c.tenant_id == tenant, model_portfolios.c.model_id.in_(ids)))
    return {r.model_id: dict(r.policy or {}) for r in rows}


async def upsert_model(s: AsyncSession, tenant: str, model_id: str, name: str,
                       targets: dict[str, Decimal], policy: dict[str, Any] | None = None) -> bool:
    """Create or replace a model; True if it was created. Accounts on a changed model re-sync."""
    old_policy = (await model_policies_of(s, tenant, [model_id])).get(model_id)
    new_policy = policy if policy is not None else (old_policy or {})
    stmt = pg_insert(model_portfolios).values(tenant_id=tenant, model_id=model_id, name=name, policy=new_policy)
    created = (await s.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id", "model_id"],
            set_={"name": stmt.excluded.name, "policy": stmt.excluded.policy, "updated_at": func.now()},
        ).returning(literal_column("xmax = 0"))  # true when the row was inserted, not updated
    )).scalar_one()
    old = (await model_targets_of(s, tenant, [model_id]))[model_id]
    if old == targets and (old_policy or {}) == new_policy:
        return bool(created)
    await s.execute(delete(model_targets).where(
        model_targets.c.tenant_id == tenant, model_targets.c.model_id == model_id))
    if targets:
        await s.execute(insert(model_targets), [
            {"tenant_id": tenant, "model_id": model_id, "symbol": sym, "weight": w}
            for sym, w in sorted(targets.items())])
    # Lock the affected accounts in key order (the tick handler locks in the same order).
    ids = (await s.execute(select(accounts.c.account_id).where(
        accounts.c.tenant_id == tenant, accounts.c.model_id == model_id)
        .order_by(accounts.c.account_id).with_for_update())).scalars().all()
    if ids:
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.model_id == model_id).values(**bump()))
    return bool(created)


# ---------------------------------------------------------------- accounts


def _account_values(tenant: str, a: AccountIn) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "account_id": a.account_id, "household_id": a.household_id,
        "account_type": a.account_type, "model_id": a.model_id, "cash_usd": a.cash_usd,
        "cash_reserve_usd": a.cash_reserve_usd, "restricted": list(a.restricted),
        "never_buy": list(a.never_buy), "esg_excluded": list(a.esg_excluded),
        "custom_targets": None if a.custom_targets is None else {k: str(v) for k, v in a.custom_targets.items()},
        "policy": a.policy.stored(), "tax_short_term": a.tax_rates.short_term,
        "tax_long_term": a.tax_rates.long_term,
    }


def _lot_values(tenant: str, account_id: str, lot: Lot) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "account_id": account_id, "lot_id": lot.lot_id, "symbol": lot.symbol,
        "shares": lot.shares, "cost_basis_usd_per_share": lot.cost_basis_usd_per_share,
        "acquired_on": lot.acquired_on,
    }


async def existing_account_ids(s: AsyncSession, tenant: str, account_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(set(account_ids))):
        rows = await s.execute(select(accounts.c.account_id).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id.in_(chunk)))
        found.update(rows.scalars())
    return found


async def insert_accounts(s: AsyncSession, tenant: str, rows: Sequence[AccountIn]) -> None:
    """Insert validated accounts, their households and lots: one executemany per table."""
    if not rows:
        return
    hh = sorted({a.household_id for a in rows if a.household_id})
    if hh:
        await s.execute(pg_insert(households).on_conflict_do_nothing(),
                        [{"tenant_id": tenant, "household_id": h} for h in hh])
    await s.execute(insert(accounts), [_account_values(tenant, a) for a in rows])
    lot_rows = [_lot_values(tenant, a.account_id, lot_from_in(lot)) for a in rows for lot in a.lots]
    if lot_rows:
        await s.execute(insert(lots), lot_rows)


async def write_lots(s: AsyncSession, tenant: str, account_id: str, new_lots: Sequence[Lot]) -> None:
    """Replace an account's lots (the caller holds the account row lock and bumps its revision)."""
    await s.execute(delete(lots).where(lots.c.tenant_id == tenant, lots.c.account_id == account_id))
    if new_lots:
        await s.execute(insert(lots), [_lot_values(tenant, account_id, lot) for lot in new_lots])


async def load_books(s: AsyncSession, tenant: str, account_ids: Sequence[str] | None = None, *,
                     household_id: str | None = None, for_update: bool = False) -> dict[str, Book]:
    """Accounts (all of the tenant's, or the ids given, or one household's) with lots and targets.

    With `for_update` the account rows are locked in account_id order, so two transactions that
    lock overlapping sets cannot deadlock.
    """
    q = select(accounts).where(accounts.c.tenant_id == tenant).order_by(accounts.c.account_id)
    if household_id is not None:
        q = q.where(accounts.c.household_id == household_id)
    if for_update:
        q = q.with_for_update()
    rows: list[Row[Any]] = []
    if account_ids is None:
        rows = list((await s.execute(q)).all())
    else:
        for chunk in _chunks(sorted(set(account_ids))):
            rows += (await s.execute(q.where(accounts.c.account_id.in_(chunk)))).all()
    if not rows:
        return {}
    ids = [r.account_id for r in rows]
    by_account: dict[str, list[Lot]] = {i: [] for i in ids}
    for chunk in _chunks(ids):
        for r in await s.execute(select(lots).where(lots.c.tenant_id == tenant, lots.c.account_id.in_(chunk))
                                 .order_by(lots.c.account_id, lots.c.acquired_on, lots.c.lot_id)):
            by_account[r.account_id].append(to_lot(r))
    models = {r.model_id for r in rows}
    targets = await model_targets_of(s, tenant, models)
    policies = await model_policies_of(s, tenant, models)
    wd = await open_withdrawals(s, tenant, ids)
    return {r.account_id: Book(r, by_account[r.account_id], targets.get(r.model_id, {}), policies.get(r.model_id),
                               wd.get(r.account_id, Decimal(0))) for r in rows}


async def open_withdrawals(s: AsyncSession, tenant: str, account_ids: Sequence[str]) -> dict[str, Decimal]:
    """The total of open withdrawal requests per account."""
    out: dict[str, Decimal] = {}
    for chunk in _chunks(list(account_ids)):
        for r in await s.execute(
            select(withdrawals.c.account_id, func.sum(withdrawals.c.amount_usd).label("total"))
            .where(withdrawals.c.tenant_id == tenant, withdrawals.c.status == "open",
                   withdrawals.c.account_id.in_(chunk)).group_by(withdrawals.c.account_id)):
            out[r.account_id] = r.total
    return out


async def load_prices(s: AsyncSession, tenant: str) -> dict[str, Row[Any]]:
    rows = await s.execute(select(prices).where(prices.c.tenant_id == tenant))
    return {r.symbol: r for r in rows}
