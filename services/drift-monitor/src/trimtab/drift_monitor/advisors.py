"""Advisors of a firm (the tenant): create or update, list, read. Accounts and households name
their advisor by id (checked on write, see service.py); each query is scoped to the tenant."""

from __future__ import annotations

from sqlalchemy import func, literal_column, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from trimtab.shared.errors import NotFound
from trimtab.shared.runtime import ServiceRuntime

from .models import advisors
from .schemas import AdvisorIn, AdvisorOut


def _out(r: object) -> AdvisorOut:
    return AdvisorOut.model_validate(r, from_attributes=True)


async def put_advisor(rt: ServiceRuntime, tenant: str, body: AdvisorIn) -> tuple[AdvisorOut, bool]:
    """Create the advisor, or update its name and email; True if it was created."""
    async with rt.uow() as uow:
        stmt = pg_insert(advisors).values(tenant_id=tenant, advisor_id=body.advisor_id, name=body.name,
                                          email=body.email)
        created = (await uow.session.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "advisor_id"],
            set_={"name": stmt.excluded.name, "email": stmt.excluded.email, "updated_at": func.now()},
        ).returning(literal_column("xmax = 0")))).scalar_one()  # true when inserted, not updated
        await uow.commit()
    return await get_advisor(rt, tenant, body.advisor_id), bool(created)


async def list_advisors(rt: ServiceRuntime, tenant: str, advisor_id: str | None = None) -> list[AdvisorOut]:
    assert rt.sessionmaker is not None
    q = select(advisors).where(advisors.c.tenant_id == tenant).order_by(advisors.c.advisor_id)
    if advisor_id is not None:
        q = q.where(advisors.c.advisor_id == advisor_id)
    async with rt.sessionmaker() as s:
        return [_out(r) for r in (await s.execute(q)).all()]


async def get_advisor(rt: ServiceRuntime, tenant: str, advisor_id: str) -> AdvisorOut:
    found = await list_advisors(rt, tenant, advisor_id)
    if not found:
        raise NotFound(f"advisor {advisor_id} not found")
    return found[0]
