"""Application services behind the book API: each call one transaction, tenant-scoped.

Bulk import validates every row on its own (schema, duplicates in the batch, existing ids, unknown
models) and inserts the good rows with one executemany per table in one transaction, returning a
report of the rejected rows: a good row is never lost because of a bad one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from trimtab.shared.errors import Conflict, Invalid, NotFound
from trimtab.shared.runtime import ServiceRuntime

from .book import (
    Book,
    bump,
    existing_account_ids,
    existing_model_ids,
    insert_accounts,
    load_books,
    load_prices,
    lot_from_in,
    model_targets_of,
    upsert_model,
    write_lots,
)
from .models import accounts, households, model_portfolios
from .schemas import (
    AccountIn,
    AccountOut,
    BulkOut,
    BulkRejected,
    DriftOut,
    HouseholdIn,
    HouseholdOut,
    LotOut,
    LotsIn,
    ModelIn,
    ModelOut,
    PolicyOut,
    TaxRatesOut,
)
from .snapshots import drift_view


def account_out(book: Book) -> AccountOut:
    a = book.account
    return AccountOut(
        account_id=a.account_id, household_id=a.household_id, account_type=a.account_type,
        model_id=a.model_id, cash_usd=a.cash_usd, cash_reserve_usd=a.cash_reserve_usd,
        restricted=list(a.restricted or []),
        policy=PolicyOut(band_abs=a.band_abs, automation=a.automation, max_turnover=a.max_turnover),
        tax_rates=TaxRatesOut(short_term=a.tax_short_term, long_term=a.tax_long_term),
        lots=[LotOut(lot_id=lot.lot_id, symbol=lot.symbol, shares=lot.shares,
                     cost_basis_usd_per_share=lot.cost_basis_usd_per_share, acquired_on=lot.acquired_on)
              for lot in book.lots],
        positions={s: q for s, q in sorted(book.shares_by_symbol().items())},
        drift_state=a.drift_state, pending_drift_id=a.pending_drift_id, revision=a.revision,
        updated_at=a.updated_at,
    )


# ---------------------------------------------------------------- models


async def put_model(rt: ServiceRuntime, tenant: str, body: ModelIn) -> tuple[ModelOut, bool]:
    async with rt.uow() as uow:
        created = await upsert_model(uow.session, tenant, body.model_id, body.name, dict(body.targets))
        await uow.commit()
    return await get_model(rt, tenant, body.model_id), created


async def list_models(rt: ServiceRuntime, tenant: str, model_id: str | None = None) -> list[ModelOut]:
    assert rt.sessionmaker is not None
    q = select(model_portfolios).where(model_portfolios.c.tenant_id == tenant).order_by(model_portfolios.c.model_id)
    if model_id is not None:
        q = q.where(model_portfolios.c.model_id == model_id)
    async with rt.sessionmaker() as s:
        rows = (await s.execute(q)).all()
        targets = await model_targets_of(s, tenant, [r.model_id for r in rows])
    return [ModelOut(model_id=r.model_id, name=r.name, targets=dict(sorted(targets[r.model_id].items())),
                     cash_target_weight=Decimal(1) - sum(targets[r.model_id].values(), Decimal(0)),
                     updated_at=r.updated_at) for r in rows]


async def get_model(rt: ServiceRuntime, tenant: str, model_id: str) -> ModelOut:
    found = await list_models(rt, tenant, model_id)
    if not found:
        raise NotFound(f"model {model_id} not found")
    return found[0]


# ---------------------------------------------------------------- households


async def create_household(rt: ServiceRuntime, tenant: str, body: HouseholdIn) -> HouseholdOut:
    async with rt.uow() as uow:
        stmt = pg_insert(households).values(tenant_id=tenant, household_id=body.household_id, name=body.name)
        await uow.session.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "household_id"], set_={"name": stmt.excluded.name}))
        await uow.commit()
    return await get_household(rt, tenant, body.household_id)


async def get_household(rt: ServiceRuntime, tenant: str, household_id: str) -> HouseholdOut:
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        row = (await s.execute(select(households).where(
            households.c.tenant_id == tenant, households.c.household_id == household_id))).first()
        if row is None:
            raise NotFound(f"household {household_id} not found")
        ids = (await s.execute(select(accounts.c.account_id).where(
            accounts.c.tenant_id == tenant, accounts.c.household_id == household_id)
            .order_by(accounts.c.account_id))).scalars().all()
    return HouseholdOut(household_id=row.household_id, name=row.name, account_ids=list(ids))


# ---------------------------------------------------------------- accounts


async def create_account(rt: ServiceRuntime, tenant: str, body: AccountIn) -> AccountOut:
    async with rt.uow() as uow:
        s = uow.session
        if not await existing_model_ids(s, tenant, [body.model_id]):
            raise Invalid(f"unknown model {body.model_id}; create it with POST /v1/models",
                          model_id=body.model_id)
        if await existing_account_ids(s, tenant, [body.account_id]):
            raise Conflict(f"account {body.account_id} already exists")
        try:
            await insert_accounts(s, tenant, [body])
            await uow.commit()
        except IntegrityError:
            raise Conflict(f"account {body.account_id} already exists") from None
    return await get_account(rt, tenant, body.account_id)


async def get_account(rt: ServiceRuntime, tenant: str, account_id: str) -> AccountOut:
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        book = (await load_books(s, tenant, [account_id])).get(account_id)
    if book is None:
        raise NotFound(f"account {account_id} not found")
    return account_out(book)


async def list_accounts(rt: ServiceRuntime, tenant: str, household_id: str | None) -> list[AccountOut]:
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        books = await load_books(s, tenant, household_id=household_id)
    return [account_out(b) for _, b in sorted(books.items())]


async def replace_lots(rt: ServiceRuntime, tenant: str, account_id: str, body: LotsIn) -> AccountOut:
    async with rt.uow() as uow:
        s = uow.session
        locked = (await s.execute(select(accounts.c.account_id).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == account_id).with_for_update())).first()
        if locked is None:
            raise NotFound(f"account {account_id} not found")
        await write_lots(s, tenant, account_id, [lot_from_in(lot) for lot in body.lots])
        values: dict[str, Any] = bump()
        if body.cash_usd is not None:
            values["cash_usd"] = body.cash_usd
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == account_id).values(**values))
        await uow.commit()
    return await get_account(rt, tenant, account_id)


def _errors(e: ValidationError) -> list[str]:
    return [f"{'.'.join(str(x) for x in err['loc']) or '(row)'}: {err['msg']}" for err in e.errors()]


async def bulk_import(rt: ServiceRuntime, tenant: str, rows: list[dict[str, Any]]) -> BulkOut:
    rejected: list[BulkRejected] = []
    valid: list[tuple[int, AccountIn]] = []
    seen: set[str] = set()
    for i, raw in enumerate(rows):
        rid = raw.get("account_id") if isinstance(raw, dict) else None
        rid = rid if isinstance(rid, str) else None
        try:
            acc = AccountIn.model_validate(raw)
        except ValidationError as e:
            rejected.append(BulkRejected(index=i, account_id=rid, errors=_errors(e)))
            continue
        if acc.account_id in seen:
            rejected.append(BulkRejected(index=i, account_id=rid, errors=["account_id: repeated in this batch"]))
            continue
        seen.add(acc.account_id)
        valid.append((i, acc))
    async with rt.uow() as uow:
        s = uow.session
        exists = await existing_account_ids(s, tenant, [a.account_id for _, a in valid])
        models = await existing_model_ids(s, tenant, [a.model_id for _, a in valid])
        good: list[AccountIn] = []
        for i, a in valid:
            if a.account_id in exists:
                rejected.append(BulkRejected(index=i, account_id=a.account_id,
                                             errors=["account_id: already exists"]))
            elif a.model_id not in models:
                rejected.append(BulkRejected(index=i, account_id=a.account_id,
                                             errors=[f"model_id: unknown model {a.model_id}"]))
            else:
                good.append(a)
        try:
            await insert_accounts(s, tenant, good)
            await uow.commit()
        except IntegrityError:
            # Only a concurrent insert of the same ids gets here (everything else was checked).
            raise Conflict("some accounts were created concurrently; retry the batch") from None
    rejected.sort(key=lambda r: r.index)
    return BulkOut(created=len(good), created_ids=[a.account_id for a in good], rejected=rejected)


async def account_drift(rt: ServiceRuntime, tenant: str, account_id: str) -> DriftOut:
    """The account's drift now, computed exactly from the book and the latest prices."""
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        book = (await load_books(s, tenant, [account_id])).get(account_id)
        if book is None:
            raise NotFound(f"account {account_id} not found")
        price_rows = await load_prices(s, tenant)
    return drift_view(book, price_rows)
