"""Reference data in the event flow: per-security market data and the tenant's factor risk model.

A `DriftDetected` brings a snapshot and, at most, a mandate (a tax budget): nothing about the
market. The optimizer keeps per tenant what a solve needs beyond that (`PUT /v1/reference/...`):

- per security (`security_reference`): `sigma_daily` and `adv_usd` (market impact), the wash
  and substitute groups and the tax drag, with `SecurityContext`'s meaning and validation;
- one current factor risk model (`risk_models`): a `FactorModelContext` as given.

Every solve's context (a drift's, a what-if's, a household what-if's) gets them before it is
solved (`merge_reference`, pure):

- each symbol of the snapshots (securities, positions, targets) with a reference row gets its
  `SecurityContext`, unless the given context already has one for that symbol: the given one
  wins whole (fields are not mixed across the two sources); a row with no field set adds nothing;
- the tenant's factor model, when the given context has none, restricted to the rows of the
  snapshots' symbols, in the model's order; no row of them: no model. A symbol the model has no
  row for is left out: the library gives it zero loadings and the average security's variance
  (`trimtab.rebalance.inputs._risk`), so that is not an error, and since the library normalizes
  by the rows of the solve's own symbols only, the restricted model solves exactly as the whole
  one would (tested) while the recorded context stays small.

The merged context is what the solve uses and what `RebalanceProposed.context` records
(engine.py), so a replay re-solves with the reference data of the time, not today's.

Reading costs one query per solve (`load_reference`): the symbols' reference rows and the
*version* of the tenant's model. Each process keeps the models it has parsed by version (a new
version on every PUT; a small LRU), so the model's JSON is read and parsed once per version and
a drift costs only its own symbols' rows. Measured on this machine for a 20-symbol snapshot
(`bench/reference.py`, docs/optimizer.md): about 0.75 ms a solve whatever the model's size,
where reading and parsing a 3,000 x 20 model per event (1.4 MB of JSON) costs about 21 ms. There is no TTL: an update is seen by the next
solve, on every replica.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.types import Text

from trimtab.shared.events import (
    AccountSnapshot,
    FactorModelContext,
    OptimizerContext,
    SecurityContext,
)

from .models import SCHEMA, risk_models, security_reference

#: The fields of a security's reference row (`SecurityContext`'s).
SECURITY_FIELDS: tuple[str, ...] = tuple(SecurityContext.model_fields)
_EMPTY_SECURITY = SecurityContext()


@dataclass(frozen=True)
class Reference:
    """What the optimizer knows of a tenant's market beyond the snapshot (for some symbols)."""

    securities: Mapping[str, SecurityContext] = field(default_factory=dict)
    factor_model: FactorModelContext | None = None


# --------------------------------------------------------------------------- pure


def snapshot_symbols(snapshots: Iterable[AccountSnapshot]) -> set[str]:
    """Every symbol the snapshots name: priced, held or targeted (what a solve can touch)."""
    out: set[str] = set()
    for s in snapshots:
        out.update(sec.symbol for sec in s.securities)
        out.update(p.symbol for p in s.positions)
        out.update(s.targets)
    return out


def restrict_model(model: FactorModelContext, symbols: Iterable[str]) -> FactorModelContext | None:
    """The model's rows of `symbols` (in the model's order, same factors and name); None when
    it has none of them."""
    wanted = set(symbols)
    rows = [i for i, s in enumerate(model.symbols) if s in wanted]
    if not rows:
        return None
    if len(rows) == len(model.symbols):
        return model
    return FactorModelContext(name=model.name, symbols=[model.symbols[i] for i in rows],
                              loadings=[model.loadings[i] for i in rows],
                              specific_var=[model.specific_var[i] for i in rows])


def merge_reference(base: OptimizerContext | None, symbols: Iterable[str],
                    reference: Reference) -> OptimizerContext | None:
    """`base` (the drift's or an API caller's context) with the reference data of `symbols`
    added where `base` has none: a `SecurityContext` per symbol (base's wins whole), the factor
    model restricted to `symbols` (base's wins whole). Unchanged (None stays None) when the
    reference adds nothing."""
    wanted = set(symbols)
    given = base.securities if base is not None else {}
    added = {s: c for s, c in reference.securities.items()
             if s in wanted and s not in given and c != _EMPTY_SECURITY}
    model = None
    if (base is None or base.factor_model is None) and reference.factor_model is not None:
        model = restrict_model(reference.factor_model, wanted)
    if not added and model is None:
        return base
    base = base or OptimizerContext()
    update: dict[str, Any] = {}
    if added:
        merged = {**added, **given}
        update["securities"] = {s: merged[s] for s in sorted(merged)}
    if model is not None:
        update["factor_model"] = model
    return base.model_copy(update=update)


def securities_from_rows(rows: Sequence[Any]) -> dict[str, SecurityContext]:
    """Reference rows (symbol and `SecurityContext`'s fields) by symbol."""
    return {r.symbol: SecurityContext(**{f: getattr(r, f) for f in SECURITY_FIELDS}) for r in rows}


class IndexedModel:
    """A stored factor model, parsed once, with its rows found by symbol (a process keeps one
    per model version, so a drift costs its own symbols' rows, not the model's size)."""

    def __init__(self, model: FactorModelContext) -> None:
        self.model = model
        self.row = {s: i for i, s in enumerate(model.symbols)}

    def rows_of(self, symbols: Iterable[str]) -> FactorModelContext | None:
        """The model's rows of `symbols`, in the model's order; None when it has none of them."""
        rows = sorted(self.row[s] for s in set(symbols) if s in self.row)
        if not rows:
            return None
        m = self.model
        if len(rows) == len(m.symbols):
            return m
        # Rows of a validated model: no need to validate them again.
        return FactorModelContext.model_construct(
            name=m.name, symbols=[m.symbols[i] for i in rows], loadings=[m.loadings[i] for i in rows],
            specific_var=[m.specific_var[i] for i in rows])


# --------------------------------------------------------------------------- queries

#: The parsed models this process has read, by version (a new one per PUT), least recent first.
_MODELS: OrderedDict[uuid.UUID, IndexedModel] = OrderedDict()
#: How many parsed models a process keeps (one per tenant in use; a 3,000 x 20 model is ~5 MB).
MAX_CACHED_MODELS = 16

#: One query per solve: the reference rows of the symbols, and the version of the tenant's model
#: (not its JSON). The JSON is read and parsed only for a version this process has not seen.
_LOAD = text(f"""
SELECT 'security' AS kind, r.symbol, r.sigma_daily, r.adv_usd, r.wash_group, r.substitute_group,
       r.tax_drag, NULL::uuid AS version
FROM {SCHEMA}.security_reference AS r
WHERE r.tenant_id = :tenant_id AND r.symbol = ANY(:symbols)
UNION ALL
SELECT 'model', NULL, NULL, NULL, NULL, NULL, NULL, m.version
FROM {SCHEMA}.risk_models AS m
WHERE m.tenant_id = :tenant_id
""").bindparams(bindparam("symbols", type_=ARRAY(Text)))


async def _model(session: Any, tenant_id: str, version: uuid.UUID) -> IndexedModel | None:
    """The tenant's model of `version`, parsed once per process (a newer one if it was just
    replaced: the newest is read and kept under its own version)."""
    cached = _MODELS.get(version)
    if cached is not None:
        _MODELS.move_to_end(version)
        return cached
    row = (await session.execute(select(risk_models.c.version, risk_models.c.model)
                                 .where(risk_models.c.tenant_id == tenant_id))).first()
    if row is None:
        return None
    parsed = IndexedModel(FactorModelContext.model_validate(row.model))
    _MODELS[row.version] = parsed
    while len(_MODELS) > MAX_CACHED_MODELS:
        _MODELS.popitem(last=False)
    return parsed


async def load_reference(session: Any, tenant_id: str, symbols: Iterable[str]) -> Reference:
    """The tenant's reference data for `symbols`: one query (a second one only the first time
    this process meets a version of the tenant's model); none for no symbols."""
    wanted = sorted(set(symbols))
    if not wanted:
        return Reference()
    rows = (await session.execute(_LOAD, {"tenant_id": tenant_id, "symbols": wanted})).all()
    version = next((r.version for r in rows if r.kind == "model"), None)
    model = None if version is None else await _model(session, tenant_id, version)
    return Reference(securities=securities_from_rows([r for r in rows if r.kind == "security"]),
                     factor_model=None if model is None else model.rows_of(wanted))


async def with_reference(session: Any, tenant_id: str, snapshots: Sequence[AccountSnapshot],
                         base: OptimizerContext | None) -> OptimizerContext | None:
    """`base` with the tenant's reference data for the snapshots' symbols (`merge_reference`)."""
    symbols = snapshot_symbols(snapshots)
    return merge_reference(base, symbols, await load_reference(session, tenant_id, symbols))


# --------------------------------------------------------------------------- API side


async def upsert_securities(session: Any, tenant_id: str,
                            items: Sequence[tuple[str, SecurityContext]]) -> None:
    """Insert or replace each symbol's row (a field not given is stored as null): one statement."""
    rows = [{"tenant_id": tenant_id, "symbol": sym, **ctx.model_dump(include=set(SECURITY_FIELDS))}
            for sym, ctx in items]
    stmt = insert(security_reference).values(rows)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[security_reference.c.tenant_id, security_reference.c.symbol],
        set_={**{f: stmt.excluded[f] for f in SECURITY_FIELDS}, "updated_at": func.now()}))


async def securities(session: Any, tenant_id: str, symbols: Sequence[str] | None = None, *,
                     after: str | None = None, limit: int | None = None) -> list[Any]:
    """The tenant's reference rows (of `symbols`, or all after `after`), by symbol."""
    t = security_reference.c
    q = select(security_reference).where(t.tenant_id == tenant_id)
    if symbols is not None:
        q = q.where(t.symbol.in_(list(symbols)))
    if after is not None:
        q = q.where(t.symbol > after)
    q = q.order_by(t.symbol)
    if limit is not None:
        q = q.limit(limit)
    return list((await session.execute(q)).all())


async def put_risk_model(session: Any, tenant_id: str, model: FactorModelContext) -> datetime:
    """Make `model` the tenant's current factor model; returns its `updated_at`."""
    stmt = insert(risk_models).values(tenant_id=tenant_id, name=model.name,
                                      model=model.model_dump(mode="json"), version=uuid.uuid4())
    stmt = stmt.on_conflict_do_update(
        index_elements=[risk_models.c.tenant_id],
        set_={"name": stmt.excluded.name, "model": stmt.excluded.model, "version": stmt.excluded.version,
              "updated_at": func.now()})
    return (await session.execute(stmt.returning(risk_models.c.updated_at))).scalar_one()


async def risk_model(session: Any, tenant_id: str) -> Any | None:
    """The tenant's current model row (name, model, updated_at), or None."""
    return (await session.execute(select(risk_models).where(risk_models.c.tenant_id == tenant_id))).first()
