"""Reading and writing the book in PostgreSQL: models and their sleeves, accounts with their lots,
prices.

Every function takes the caller's session (the caller owns the transaction) and a tenant id, and
every statement is filtered by that tenant. Writes to an account bump its `revision` and
`changed_xid`, which is how the drift engine learns that a row changed (see models.py, cache.py).

A model's targets as accounts see them are its sleeves expanded (domain/sleeves.py); a change to
a model re-targets the accounts of that model and of every model containing it as a sleeve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, delete, func, insert, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.errors import Invalid

from .domain.ledger import Lot
from .domain.rules import AccountState, Policy, effective_targets, resolve_policy
from .domain.sleeves import SleeveError, ancestors, descendants, expand, quantized
from .models import (
    CURRENT_XID,
    accounts,
    advisors,
    households,
    lots,
    model_portfolios,
    model_sleeves,
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
    def base_targets(self) -> dict[str, Decimal]:
        """The account's custom targets or its model's, before any exclusion."""
        custom = self.account.custom_targets
        return {k: Decimal(str(v)) for k, v in custom.items()} if custom is not None else self.model_targets

    @property
    def targets(self) -> dict[str, Decimal]:
        """Effective targets: custom or the model's, exclusions spread over the rest."""
        return effective_targets(self.base_targets, self.excluded)

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


async def own_targets_of(s: AsyncSession, tenant: str, model_ids: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    """Each model's own security weights, as stored (without its sleeves)."""
    ids = sorted(set(model_ids))
    out: dict[str, dict[str, Decimal]] = {m: {} for m in ids}
    if not ids:
        return out
    rows = await s.execute(select(model_targets).where(
        model_targets.c.tenant_id == tenant, model_targets.c.model_id.in_(ids)))
    for r in rows:
        out[r.model_id][r.symbol] = r.weight
    return out


async def sleeve_graph(s: AsyncSession, tenant: str) -> dict[str, dict[str, Decimal]]:
    """Every sleeve of the tenant: parent model -> child model -> weight (a few rows per model)."""
    out: dict[str, dict[str, Decimal]] = {}
    for r in await s.execute(select(model_sleeves).where(model_sleeves.c.tenant_id == tenant)):
        out.setdefault(r.model_id, {})[r.child_model_id] = r.weight
    return out


def expanded_targets(model_ids: Iterable[str], own: dict[str, dict[str, Decimal]],
                     graph: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
    """Security targets of each model, sleeves expanded (`own` must cover their descendants)."""
    return {m: quantized(expand(m, own, graph)) if graph.get(m) else dict(own.get(m, {})) for m in model_ids}


async def model_targets_of(s: AsyncSession, tenant: str, model_ids: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    """Each model's security targets as its accounts see them: own weights plus expanded sleeves."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    graph = await sleeve_graph(s, tenant)
    own = await own_targets_of(s, tenant, descendants(ids, graph) if graph else ids)
    return expanded_targets(ids, own, graph)


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


async def _lock_models(s: AsyncSession, tenant: str) -> None:
    """Serialize model writes of a tenant: two concurrent writes could otherwise close a cycle
    neither sees (A -> B in one transaction, B -> A in another)."""
    await s.execute(text("SELECT pg_advisory_xact_lock(hashtext('drift_monitor.models:' || :t))"), {"t": tenant})


async def _check_sleeves(s: AsyncSession, tenant: str, model_id: str, sleeves: dict[str, Decimal],
                         graph: dict[str, dict[str, Decimal]]) -> None:
    """422 unless every sleeve exists and the graph with `model_id`'s new sleeves expands (no
    cycle, not too deep) for the model and every model containing it."""
    unknown = sorted(set(sleeves) - await existing_model_ids(s, tenant, sleeves) - {model_id})
    if unknown:
        raise Invalid(f"unknown sleeve models: {', '.join(unknown)}", models=unknown)
    graph[model_id] = dict(sleeves)
    # The targets do not matter for the shape; every model involved is known.
    shape = {m: {} for m in descendants([model_id], graph) | ancestors([model_id], graph) | {model_id}}
    for m in sorted({model_id} | ancestors([model_id], graph)):
        try:
            expand(m, shape, graph)
        except SleeveError as e:
            raise Invalid(str(e), model_id=model_id) from None


async def upsert_model(s: AsyncSession, tenant: str, model_id: str, name: str,
                       targets: dict[str, Decimal], policy: dict[str, Any] | None = None,
                       sleeves: dict[str, Decimal] | None = None) -> bool:
    """Create or replace a model (own targets and sleeves); True if it was created. Accounts on
    a changed model, and on every model containing it as a sleeve, re-sync. Invalid (422) for an
    unknown sleeve, a cycle or nesting deeper than MAX_DEPTH."""
    sleeves = dict(sleeves or {})
    await _lock_models(s, tenant)
    graph = await sleeve_graph(s, tenant)
    old_sleeves = dict(graph.get(model_id, {}))
    if sleeves != old_sleeves or model_id in sleeves:
        await _check_sleeves(s, tenant, model_id, sleeves, graph)
    old_policy = (await model_policies_of(s, tenant, [model_id])).get(model_id)
    new_policy = policy if policy is not None else (old_policy or {})
    stmt = pg_insert(model_portfolios).values(tenant_id=tenant, model_id=model_id, name=name, policy=new_policy)
    created = (await s.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id", "model_id"],
            set_={"name": stmt.excluded.name, "policy": stmt.excluded.policy, "updated_at": func.now()},
        ).returning(literal_column("xmax = 0"))  # true when the row was inserted, not updated
    )).scalar_one()
    old = (await own_targets_of(s, tenant, [model_id]))[model_id]
    targets_changed = old != targets or old_sleeves != sleeves
    if not targets_changed and (old_policy or {}) == new_policy:
        return bool(created)
    if old != targets:
        await s.execute(delete(model_targets).where(
            model_targets.c.tenant_id == tenant, model_targets.c.model_id == model_id))
        if targets:
            await s.execute(insert(model_targets), [
                {"tenant_id": tenant, "model_id": model_id, "symbol": sym, "weight": w}
                for sym, w in sorted(targets.items())])
    if old_sleeves != sleeves:
        await s.execute(delete(model_sleeves).where(
            model_sleeves.c.tenant_id == tenant, model_sleeves.c.model_id == model_id))
        if sleeves:
            await s.execute(insert(model_sleeves), [
                {"tenant_id": tenant, "model_id": model_id, "child_model_id": c, "weight": w}
                for c, w in sorted(sleeves.items())])
    # A policy is not inherited through sleeves; targets are, by every model containing this one.
    affected = sorted({model_id} | (ancestors([model_id], graph) if targets_changed else set()))
    # Lock the affected accounts in key order (the tick handler locks in the same order).
    ids = (await s.execute(select(accounts.c.account_id).where(
        accounts.c.tenant_id == tenant, accounts.c.model_id.in_(affected))
        .order_by(accounts.c.account_id).with_for_update())).scalars().all()
    if ids:
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.model_id.in_(affected)).values(**bump()))
    return bool(created)


async def existing_advisor_ids(s: AsyncSession, tenant: str, advisor_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(advisor_ids))
    if not ids:
        return set()
    rows = await s.execute(select(advisors.c.advisor_id).where(
        advisors.c.tenant_id == tenant, advisors.c.advisor_id.in_(ids)))
    return set(rows.scalars())


# ---------------------------------------------------------------- accounts


def _account_values(tenant: str, a: AccountIn) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "account_id": a.account_id, "household_id": a.household_id,
        "advisor_id": a.advisor_id,
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
                     household_id: str | None = None, advisor_id: str | None = None,
                     after: str | None = None, limit: int | None = None,
                     for_update: bool = False) -> dict[str, Book]:
    """Accounts (all of the tenant's, or the ids given, or one household's or advisor's) with lots
    and targets; `after` / `limit` page through them in account_id order (keyset pagination).

    With `for_update` the account rows are locked in account_id order, so two transactions that
    lock overlapping sets cannot deadlock.
    """
    q = select(accounts).where(accounts.c.tenant_id == tenant).order_by(accounts.c.account_id)
    if household_id is not None:
        q = q.where(accounts.c.household_id == household_id)
    if advisor_id is not None:
        q = q.where(accounts.c.advisor_id == advisor_id)
    if after is not None:
        q = q.where(accounts.c.account_id > after)
    if limit is not None:
        q = q.limit(limit)
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
