"""A tenant's scenarios: the built-in ones (code) and the ones its users defined (table)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.errors import Invalid

from .domain.scenarios import BUILTIN, Scenario
from .models import scenarios


def from_row(row: Any) -> Scenario:
    spec = row.spec
    return Scenario(
        scenario_id=row.scenario_id, name=row.name, kind=row.kind,
        start=_date(spec.get("start")), end=_date(spec.get("end")),
        shocks={k: float(v) for k, v in spec.get("shocks", {}).items()},
        propagate=bool(spec.get("propagate", True)), description=row.description)


def _date(text: str | None):  # type: ignore[no-untyped-def]
    from datetime import date

    return None if text is None else date.fromisoformat(text)


async def load_scenarios(session: AsyncSession, tenant_id: str) -> list[Scenario]:
    rows = await session.execute(select(scenarios).where(scenarios.c.tenant_id == tenant_id)
                                 .order_by(scenarios.c.created_at, scenarios.c.scenario_id))
    return [from_row(r) for r in rows]


def pick_scenarios(ids: Sequence[str] | None, tenant: Sequence[Scenario]) -> list[Scenario]:
    """The scenarios named by `ids` (default: all), built-in first; unknown ids are an error."""
    known = {s.scenario_id: s for s in (*BUILTIN, *tenant)}
    if ids is None:
        return list(known.values())
    missing = [i for i in ids if i not in known]
    if missing:
        raise Invalid(f"unknown scenario id(s): {', '.join(missing)}")
    return [known[i] for i in dict.fromkeys(ids)]
