"""A tenant's scenarios: the built-in ones (code) and the ones its users defined (table).

A stored row may not make a scenario that can run: rows written before shocks were bounded can
hold a move of +1e300, which no result can report. Such a row is loaded as unusable, with the
reason: it is still listed, a stress run over the tenant's scenarios leaves it out and says so,
and naming it explicitly is a 422. One bad row never fails the tenant's other runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.errors import Invalid

from .domain.history import ReferenceHistory
from .domain.scenarios import BUILTIN, Scenario, problem_under
from .models import scenarios


@dataclass(frozen=True)
class StoredScenario:
    """One row of `scenarios`: the scenario it makes, or None and why it cannot run."""

    row: Any
    scenario: Scenario | None
    problem: str | None = None

    @property
    def scenario_id(self) -> str:
        return str(self.row.scenario_id)


def from_row(row: Any) -> Scenario:
    """The scenario of a stored row; ValueError (and only that) if the row cannot make one."""
    try:
        spec = row.spec
        return Scenario(
            scenario_id=row.scenario_id, name=row.name, kind=row.kind,
            start=_date(spec.get("start")), end=_date(spec.get("end")),
            shocks={str(k): float(v) for k, v in (spec.get("shocks") or {}).items()},
            propagate=bool(spec.get("propagate", True)), description=row.description)
    except ValueError:
        raise
    except (TypeError, AttributeError, ArithmeticError) as e:
        raise ValueError(f"malformed stored scenario: {e}") from None


def _date(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


def stored(row: Any) -> StoredScenario:
    try:
        return StoredScenario(row, from_row(row))
    except ValueError as e:
        return StoredScenario(row, None, f"stored scenario cannot run: {e}; define a new one")


async def load_scenarios(session: AsyncSession, tenant_id: str) -> list[StoredScenario]:
    rows = await session.execute(select(scenarios).where(scenarios.c.tenant_id == tenant_id)
                                 .order_by(scenarios.c.created_at, scenarios.c.scenario_id))
    return [stored(r) for r in rows]


def pick_scenarios(ids: Sequence[str] | None, tenant: Sequence[StoredScenario]
                   ) -> tuple[list[Scenario], dict[str, str]]:
    """(the scenarios named by `ids`, built-in first; the tenant's unusable ones left out, with
    why). Default (`ids` None): every built-in and every usable tenant scenario, the unusable
    ones reported as left out. Unknown ids, and ids of unusable scenarios, are an error."""
    known: dict[str, Scenario] = {s.scenario_id: s for s in BUILTIN}
    broken: dict[str, str] = {}
    for t in tenant:
        if t.scenario_id in known:
            continue
        if t.scenario is None:
            broken[t.scenario_id] = t.problem or "stored scenario cannot run"
        else:
            known[t.scenario_id] = t.scenario
    if ids is None:
        return list(known.values()), broken
    missing = [i for i in ids if i not in known and i not in broken]
    if missing:
        raise Invalid(f"unknown scenario id(s): {', '.join(missing)}")
    unusable = [i for i in dict.fromkeys(ids) if i in broken]
    if unusable:
        raise Invalid("; ".join(f"{i}: {broken[i]}" for i in unusable),
                      unusable_scenario_ids=unusable)
    return [known[i] for i in dict.fromkeys(ids)], {}


def runnable(chosen: Sequence[Scenario], skipped: dict[str, str], history: ReferenceHistory,
             explicit: bool) -> tuple[list[Scenario], dict[str, str]]:
    """`chosen` less the scenarios the reference history cannot shock (a stored factor it does
    not know, a window it does not cover): left out with why, or, when the caller named them
    (`explicit`), a 422."""
    problems = {sc.scenario_id: p for sc in chosen if (p := problem_under(sc, history))}
    if problems and explicit:
        raise Invalid("; ".join(f"{k}: {v}" for k, v in problems.items()),
                      unusable_scenario_ids=list(problems))
    return [sc for sc in chosen if sc.scenario_id not in problems], {**skipped, **problems}
