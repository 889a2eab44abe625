"""Thin HTTP routes for stress testing (`/v1`): list and define scenarios, and stress many
portfolios under many scenarios in one pass. Reads and stress runs need `risk:read`; defining a
scenario needs `book:write` (there is no `risk:write` scope yet). Tenant-scoped."""

from __future__ import annotations

import asyncio
import time
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import Conflict, Invalid
from trimtab.shared.http import BULK_BODY

from .analytics import StressInputs, pct, prepare_stress, reference, stress_prepared
from .domain.assessment import Limits
from .domain.history import MARKET
from .domain.scenarios import BUILTIN, BUILTIN_IDS, Scenario
from .models import recorded_by, scenarios
from .reference import ReferenceUnavailable
from .scenario_store import StoredScenario, load_scenarios, pick_scenarios, runnable
from .schemas import ScenarioIn, ScenarioOut, StressIn, StressOut, StressPortfolioOut
from .service import RiskModels

router = APIRouter(prefix="/v1", tags=["stress"])
Reader = Annotated[Principal, Depends(requires("risk:read"))]
Writer = Annotated[Principal, Depends(requires("book:write"))]


def _out(s: Scenario, builtin: bool) -> ScenarioOut:
    return ScenarioOut(scenario_id=s.scenario_id, name=s.name, kind=s.kind, start=s.start,
                       end=s.end, shocks={k: Decimal(repr(v)) for k, v in s.shocks.items()},
                       propagate=s.propagate, description=s.description, builtin=builtin)


def _stored_out(st: StoredScenario) -> ScenarioOut:
    """A tenant's scenario as listed; one that cannot run is shown as stored, with why."""
    if st.scenario is not None:
        return _out(st.scenario, False)
    row = st.row
    spec = row.spec if isinstance(row.spec, dict) else {}
    shocks = {}
    for k, v in (spec.get("shocks") if isinstance(spec.get("shocks"), dict) else {}).items():
        try:
            d = Decimal(str(v))
        except (InvalidOperation, ValueError):
            continue
        if d.is_finite():
            shocks[str(k)] = d
    return ScenarioOut(scenario_id=row.scenario_id, name=row.name, kind=row.kind,
                       start=_maybe_date(spec.get("start")), end=_maybe_date(spec.get("end")),
                       shocks=shocks, propagate=bool(spec.get("propagate", True)),
                       description=row.description, builtin=False, usable=False,
                       problem=st.problem)


def _maybe_date(text: object) -> date | None:
    try:
        return date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


@router.get("/scenarios", response_model=list[ScenarioOut],
            summary="Built-in and user-defined stress scenarios")
async def list_scenarios(principal: Reader, request: Request) -> list[ScenarioOut]:
    async with request.app.state.runtime.sessionmaker() as s:
        mine = await load_scenarios(s, principal.tenant_id)
    return [_out(x, True) for x in BUILTIN] + [_stored_out(x) for x in mine]


@router.post("/scenarios", response_model=ScenarioOut, status_code=201,
             summary="Define a scenario: a historical date range or a hypothetical shock")
async def create_scenario(body: ScenarioIn, principal: Writer, request: Request) -> ScenarioOut:
    if body.scenario_id in BUILTIN_IDS:
        raise Conflict(f"{body.scenario_id} is a built-in scenario")
    try:  # the schema checks the shape; this is the domain's last word on it
        scenario = Scenario(body.scenario_id, body.name, body.kind, body.start, body.end,
                            {k: float(v) for k, v in body.shocks.items()}, body.propagate,
                            body.description)
    except ValueError as e:
        raise Invalid(str(e)) from None
    ref = reference()
    if body.kind == "historical":
        if ref is None:
            raise Invalid("no reference history: historical scenarios are unavailable")
        try:
            ref.window(body.start, body.end)  # type: ignore[arg-type]
        except ValueError as e:
            raise Invalid(str(e)) from None
    if body.kind == "factor" and ref is not None:
        names = {MARKET, *ref.factor_names}
        if set(body.shocks) - names:
            raise Invalid(f"factors are {', '.join(sorted(names))}")
    spec = {"start": body.start.isoformat() if body.start else None,
            "end": body.end.isoformat() if body.end else None,
            "shocks": {k: format(v, "f") for k, v in body.shocks.items()},
            "propagate": body.propagate}
    async with request.app.state.runtime.sessionmaker() as s, s.begin():
        row = (await s.execute(insert(scenarios).values(
            tenant_id=principal.tenant_id, scenario_id=body.scenario_id, name=body.name,
            kind=body.kind, spec=spec, description=body.description,
            created_by=recorded_by(principal.subject)).on_conflict_do_nothing().returning(
                scenarios.c.scenario_id))).first()
    if row is None:
        raise Conflict(f"a scenario with id {body.scenario_id} or name {body.name!r} exists")
    return _out(scenario, False)


@router.post("/stress", response_model=StressOut,
             summary="Every portfolio under every scenario, in one matrix pass", openapi_extra=BULK_BODY)
async def run(body: StressIn, principal: Reader, request: Request) -> StressOut:
    models: RiskModels = request.app.state.risk_models
    async with request.app.state.runtime.sessionmaker() as s:
        model = await models.get(s, principal.tenant_id)
        chosen, skipped = pick_scenarios(body.scenario_ids,
                                         await load_scenarios(s, principal.tenant_id))
    t0 = time.perf_counter()
    try:
        # on the event loop: a copy of what the run needs (the consumers update the model here)
        inputs = prepare_stress(model, [p.weights for p in body.portfolios])
    except ReferenceUnavailable as e:
        raise Invalid(str(e)) from None
    except ValueError as e:  # more distinct symbols than one request may hold
        raise Invalid(str(e)) from None
    chosen, skipped = runnable(chosen, skipped, inputs.reference, body.scenario_ids is not None)
    # off it: the n x n risk view, the shocks, the matrix pass and the response's numbers
    return await asyncio.to_thread(_stress, inputs, chosen, skipped, body, models.limits, t0)


def _stress(inputs: StressInputs, chosen: list[Scenario], skipped: dict[str, str], body: StressIn,
            limits: Limits, t0: float) -> StressOut:
    try:
        result, _, shocks = stress_prepared(inputs, chosen, limits, body.sectors)
    except ValueError as e:  # e.g. an unknown factor
        raise Invalid(str(e)) from None
    # a scenario whose numbers are not finite under this model is reported, not a failed run
    ok = np.isfinite(result.pnl).all(axis=0) & np.isfinite(result.worst).all(axis=0)
    skipped = {**skipped, **{sc.scenario_id: "its moves are not finite numbers under the risk model"
                             for sc, good in zip(chosen, ok, strict=True) if not good}}
    keep = np.flatnonzero(ok)
    if not len(keep):
        raise Invalid("none of the scenarios can be run: "
                      + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    pnl, worst = result.pnl[:, keep], result.worst[:, keep]
    ids = [chosen[j].scenario_id for j in keep]
    deepest = worst.argmax(axis=1)
    elapsed = (time.perf_counter() - t0) * 1000
    out = [StressPortfolioOut(id=p.id, pnl_pct=[pct(x) for x in pnl[i]],
                              worst_pct=[pct(x) for x in worst[i]],
                              worst_scenario_id=ids[int(deepest[i])])
           for i, p in enumerate(body.portfolios)]
    proxied = {chosen[j].scenario_id: list(shocks.proxied[j]) for j in keep}
    windows = {chosen[j].scenario_id: list(w) for j in keep if (w := shocks.path_days[j])}
    return StressOut(scenario_ids=ids, proxied=proxied, windows=windows, portfolios=out,
                     elapsed_ms=Decimal(f"{elapsed:.3f}"), skipped=skipped)
