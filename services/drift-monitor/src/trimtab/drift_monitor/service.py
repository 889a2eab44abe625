"""Application services behind the book API: each call one transaction, tenant-scoped.

Bulk import validates every row on its own (schema, duplicates in the batch, existing ids, unknown
models) and inserts the good rows with one executemany per table in one transaction, returning a
report of the rejected rows: a good row is never lost because of a bad one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.errors import Conflict, Invalid, NotFound
from trimtab.shared.money import usd
from trimtab.shared.outbox import UnitOfWork
from trimtab.shared.pagination import decode_cursor, encode_cursor
from trimtab.shared.runtime import ServiceRuntime

from .book import (
    Book,
    bump,
    existing_account_ids,
    existing_advisor_ids,
    existing_model_ids,
    expanded_targets,
    insert_accounts,
    load_books,
    load_prices,
    lot_from_in,
    own_targets_of,
    sleeve_graph,
    upsert_model,
    write_lots,
)
from .domain.rules import clean_policy
from .domain.sleeves import descendants
from .firing import decide, fire_due
from .models import accounts, cash_flows, households, model_portfolios, withdrawals
from .schemas import (
    MAX_USD,
    AccountIn,
    AccountOut,
    BulkOut,
    BulkRejected,
    CashFlowIn,
    DriftOut,
    HouseholdDriftOut,
    HouseholdIn,
    HouseholdOut,
    LotOut,
    LotsIn,
    ModelIn,
    ModelOut,
    TaxRatesOut,
    WithdrawalIn,
    WithdrawalOut,
)
from .snapshots import Prices, drift_view, policy_out


def account_out(book: Book) -> AccountOut:
    a = book.account
    return AccountOut(
        account_id=a.account_id, household_id=a.household_id, advisor_id=a.advisor_id,
        account_type=a.account_type,
        model_id=a.model_id, cash_usd=a.cash_usd, cash_reserve_usd=a.cash_reserve_usd,
        restricted=list(a.restricted or []), never_buy=list(a.never_buy or []),
        esg_excluded=list(a.esg_excluded or []),
        custom_targets=None if a.custom_targets is None else {k: Decimal(str(v)) for k, v in a.custom_targets.items()},
        targets=dict(sorted(book.targets.items())),
        policy=policy_out(book.policy), policy_overrides=clean_policy(a.policy),
        open_withdrawals_usd=book.withdrawal_usd, last_rebalanced_at=a.last_rebalanced_at,
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
        created = await upsert_model(uow.session, tenant, body.model_id, body.name, dict(body.targets),
                                     None if body.policy is None else body.policy.stored(), dict(body.models))
        await uow.commit()
    return await get_model(rt, tenant, body.model_id), created


async def list_models(rt: ServiceRuntime, tenant: str, model_id: str | None = None) -> list[ModelOut]:
    assert rt.sessionmaker is not None
    q = select(model_portfolios).where(model_portfolios.c.tenant_id == tenant).order_by(model_portfolios.c.model_id)
    if model_id is not None:
        q = q.where(model_portfolios.c.model_id == model_id)
    async with rt.sessionmaker() as s:
        rows = (await s.execute(q)).all()
        ids = [r.model_id for r in rows]
        graph = await sleeve_graph(s, tenant)
        own = await own_targets_of(s, tenant, descendants(ids, graph))
    expanded = expanded_targets(ids, own, graph)
    return [ModelOut(model_id=r.model_id, name=r.name, targets=dict(sorted(own[r.model_id].items())),
                     models=dict(sorted(graph.get(r.model_id, {}).items())),
                     expanded_targets=dict(sorted(expanded[r.model_id].items())),
                     cash_target_weight=Decimal(1) - sum(expanded[r.model_id].values(), Decimal(0)),
                     policy=clean_policy(r.policy), updated_at=r.updated_at) for r in rows]


async def get_model(rt: ServiceRuntime, tenant: str, model_id: str) -> ModelOut:
    found = await list_models(rt, tenant, model_id)
    if not found:
        raise NotFound(f"model {model_id} not found")
    return found[0]


# ---------------------------------------------------------------- households


async def _check_advisor(s: AsyncSession, tenant: str, advisor_id: str | None) -> None:
    if advisor_id is not None and not await existing_advisor_ids(s, tenant, [advisor_id]):
        raise Invalid(f"unknown advisor {advisor_id}; create it with POST /v1/advisors", advisor_id=advisor_id)


async def create_household(rt: ServiceRuntime, tenant: str, body: HouseholdIn) -> HouseholdOut:
    async with rt.uow() as uow:
        await _check_advisor(uow.session, tenant, body.advisor_id)
        stmt = pg_insert(households).values(tenant_id=tenant, household_id=body.household_id, name=body.name,
                                            advisor_id=body.advisor_id)
        set_: dict[str, Any] = {"name": stmt.excluded.name}
        if body.advisor_id is not None:
            set_["advisor_id"] = stmt.excluded.advisor_id
        await uow.session.execute(stmt.on_conflict_do_update(index_elements=["tenant_id", "household_id"], set_=set_))
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
    return HouseholdOut(household_id=row.household_id, name=row.name, advisor_id=row.advisor_id,
                        account_ids=list(ids))


# ---------------------------------------------------------------- accounts


async def create_account(rt: ServiceRuntime, tenant: str, body: AccountIn) -> AccountOut:
    async with rt.uow() as uow:
        s = uow.session
        if not await existing_model_ids(s, tenant, [body.model_id]):
            raise Invalid(f"unknown model {body.model_id}; create it with POST /v1/models",
                          model_id=body.model_id)
        await _check_advisor(s, tenant, body.advisor_id)
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


async def list_accounts(rt: ServiceRuntime, tenant: str, household_id: str | None, advisor_id: str | None = None,
                        limit: int | None = None, cursor: str | None = None) -> tuple[list[AccountOut], str | None]:
    """One page of accounts in account_id order, and the cursor of the next page (None at the end)."""
    assert rt.sessionmaker is not None
    after = None if cursor is None else decode_cursor(cursor, 1)[0]
    async with rt.sessionmaker() as s:
        # One row more than asked tells whether there is a next page.
        books = await load_books(s, tenant, household_id=household_id, advisor_id=advisor_id, after=after,
                                 limit=None if limit is None else limit + 1)
    page = [account_out(b) for _, b in sorted(books.items())]
    if limit is not None and len(page) > limit:
        page = page[:limit]
        return page, encode_cursor(page[-1].account_id)
    return page, None


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
        advisor_ids = await existing_advisor_ids(s, tenant, [a.advisor_id for _, a in valid if a.advisor_id])
        good: list[AccountIn] = []
        for i, a in valid:
            if a.account_id in exists:
                rejected.append(BulkRejected(index=i, account_id=a.account_id,
                                             errors=["account_id: already exists"]))
            elif a.model_id not in models:
                rejected.append(BulkRejected(index=i, account_id=a.account_id,
                                             errors=[f"model_id: unknown model {a.model_id}"]))
            elif a.advisor_id is not None and a.advisor_id not in advisor_ids:
                rejected.append(BulkRejected(index=i, account_id=a.account_id,
                                             errors=[f"advisor_id: unknown advisor {a.advisor_id}"]))
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


async def account_drift(rt: ServiceRuntime, tenant: str, account_id: str, quiet_s: float) -> DriftOut:
    """The account's drift now, computed exactly from the book and the latest prices, with the
    rule that would fire and whether hysteresis or the minimum interval holds it back."""
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        book = (await load_books(s, tenant, [account_id])).get(account_id)
        if book is None:
            raise NotFound(f"account {account_id} not found")
        price_rows = await load_prices(s, tenant)
    return _view(book, price_rows, quiet_s)


def _view(book: Book, price_rows: Prices, quiet_s: float) -> DriftOut:
    rule, why = decide(book, price_rows, datetime.now(UTC), quiet_s)
    return drift_view(book, price_rows, would_fire=rule is not None, held_back_by=why)


async def household_drift(rt: ServiceRuntime, tenant: str, household_id: str, quiet_s: float) -> HouseholdDriftOut:
    """Every account of the household, and the household as one value-weighted portfolio."""
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        exists = (await s.execute(select(households.c.household_id).where(
            households.c.tenant_id == tenant, households.c.household_id == household_id))).first()
        if exists is None:
            raise NotFound(f"household {household_id} not found")
        books = await load_books(s, tenant, household_id=household_id)
        price_rows = await load_prices(s, tenant)
    views = [_view(b, price_rows, quiet_s) for _, b in sorted(books.items())]
    total, weights, targets, ok = Decimal(0), {}, {}, bool(views)
    for v in views:
        if v.total_value_usd is None:
            ok = False
            break
        total += v.total_value_usd
    if ok and total > 0:
        for v in views:
            assert v.total_value_usd is not None
            share = v.total_value_usd / total
            for sym, w in v.weights.items():
                weights[sym] = weights.get(sym, Decimal(0)) + w * share
            for sym, w in v.targets.items():
                targets[sym] = targets.get(sym, Decimal(0)) + w * share
    q = Decimal("0.0000000001")
    syms = sorted(set(weights) | set(targets))
    return HouseholdDriftOut(
        household_id=household_id, total_value_usd=usd(total) if ok else None,
        weights={k: weights.get(k, Decimal(0)).quantize(q) for k in syms} if ok else {},
        targets={k: targets.get(k, Decimal(0)).quantize(q) for k in syms} if ok else {},
        deviations={k: (weights.get(k, Decimal(0)) - targets.get(k, Decimal(0))).quantize(q) for k in syms} if ok else {},
        firing=[v.account_id for v in views if v.would_fire], accounts=views)


# ---------------------------------------------------------------- cash flows and withdrawals


async def _fire_after_write(uow: UnitOfWork, tenant: str, account_id: str, quiet_s: float) -> None:
    """Cash-flow triggers do not wait for a tick: decide the account now, in the same transaction."""
    s = uow.session
    books = await load_books(s, tenant, [account_id], for_update=True)
    price_rows = await load_prices(s, tenant)
    as_of = max((p.as_of for p in price_rows.values()), default=datetime.now(UTC))
    await fire_due(uow, tenant, books, price_rows, datetime.now(UTC), as_of, quiet_s, None)


async def _lock(s: AsyncSession, tenant: str, account_id: str) -> Row[Any]:
    row = (await s.execute(select(accounts).where(
        accounts.c.tenant_id == tenant, accounts.c.account_id == account_id).with_for_update())).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return row


async def cash_flow(rt: ServiceRuntime, tenant: str, account_id: str, body: CashFlowIn, quiet_s: float) -> AccountOut:
    async with rt.uow() as uow:
        s = uow.session
        row = await _lock(s, tenant, account_id)
        new_cash = row.cash_usd + body.amount_usd
        if new_cash < 0:
            raise Invalid(f"cash would go negative ({new_cash})", cash_usd=str(row.cash_usd))
        if new_cash > MAX_USD:
            raise Invalid(f"cash would be {new_cash}, more than {MAX_USD}", cash_usd=str(row.cash_usd))
        await s.execute(insert(cash_flows).values(tenant_id=tenant, flow_id=uuid.uuid4(), account_id=account_id,
                                                  amount_usd=body.amount_usd, note=body.note))
        await s.execute(update(accounts).where(accounts.c.tenant_id == tenant, accounts.c.account_id == account_id)
                        .values(cash_usd=new_cash, **bump()))
        await _fire_after_write(uow, tenant, account_id, quiet_s)
        await uow.commit()
    return await get_account(rt, tenant, account_id)


def _wd_out(r: Any) -> WithdrawalOut:
    return WithdrawalOut(withdrawal_id=r.withdrawal_id, account_id=r.account_id, amount_usd=r.amount_usd,
                         due_on=r.due_on, status=r.status, created_at=r.created_at, closed_at=r.closed_at)


async def request_withdrawal(rt: ServiceRuntime, tenant: str, account_id: str, body: WithdrawalIn,
                             quiet_s: float) -> WithdrawalOut:
    wid = uuid.uuid4()
    async with rt.uow() as uow:
        s = uow.session
        await _lock(s, tenant, account_id)
        await s.execute(insert(withdrawals).values(tenant_id=tenant, withdrawal_id=wid, account_id=account_id,
                                                   amount_usd=body.amount_usd, due_on=body.due_on))
        await s.execute(update(accounts).where(accounts.c.tenant_id == tenant, accounts.c.account_id == account_id)
                        .values(**bump()))
        await _fire_after_write(uow, tenant, account_id, quiet_s)
        await uow.commit()
    return (await list_withdrawals(rt, tenant, account_id, wid))[0]


async def list_withdrawals(rt: ServiceRuntime, tenant: str, account_id: str,
                           withdrawal_id: uuid.UUID | None = None) -> list[WithdrawalOut]:
    assert rt.sessionmaker is not None
    q = select(withdrawals).where(withdrawals.c.tenant_id == tenant, withdrawals.c.account_id == account_id)
    if withdrawal_id is not None:
        q = q.where(withdrawals.c.withdrawal_id == withdrawal_id)
    async with rt.sessionmaker() as s:
        rows = (await s.execute(q.order_by(withdrawals.c.due_on, withdrawals.c.created_at))).all()
    if withdrawal_id is not None and not rows:
        raise NotFound(f"withdrawal {withdrawal_id} not found")
    return [_wd_out(r) for r in rows]


async def close_withdrawal(rt: ServiceRuntime, tenant: str, account_id: str, withdrawal_id: uuid.UUID,
                           status: str) -> WithdrawalOut:
    """`paid`: the money leaves the account (cash goes down by the amount); `cancelled`: it stays."""
    async with rt.uow() as uow:
        s = uow.session
        row = await _lock(s, tenant, account_id)
        w = (await s.execute(select(withdrawals).where(
            withdrawals.c.tenant_id == tenant, withdrawals.c.withdrawal_id == withdrawal_id,
            withdrawals.c.account_id == account_id).with_for_update())).first()
        if w is None:
            raise NotFound(f"withdrawal {withdrawal_id} not found")
        if w.status != "open":
            raise Conflict(f"withdrawal {withdrawal_id} is already {w.status}")
        values: dict[str, Any] = bump()
        if status == "paid":
            if row.cash_usd < w.amount_usd:
                raise Invalid(f"cash {row.cash_usd} does not cover the withdrawal of {w.amount_usd}")
            values["cash_usd"] = row.cash_usd - w.amount_usd
            await s.execute(insert(cash_flows).values(tenant_id=tenant, flow_id=uuid.uuid4(), account_id=account_id,
                                                      amount_usd=-w.amount_usd, note=f"withdrawal {withdrawal_id}"))
        await s.execute(update(withdrawals).where(
            withdrawals.c.tenant_id == tenant, withdrawals.c.withdrawal_id == withdrawal_id,
        ).values(status=status, closed_at=func.now()))
        await s.execute(update(accounts).where(accounts.c.tenant_id == tenant, accounts.c.account_id == account_id)
                        .values(**values))
        await uow.commit()
    return (await list_withdrawals(rt, tenant, account_id, withdrawal_id))[0]
