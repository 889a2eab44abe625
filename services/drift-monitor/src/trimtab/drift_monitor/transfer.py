"""Bulk import and export of accounts, lots and models as CSV or JSON Lines (firm onboarding).

Every row is validated on its own and either accepted or reported with its line number and
errors; a good row is never lost because of a bad one. What export writes, import reads back.

CSV layouts (lists are `;`-separated, custom targets `SYM:weight;SYM:weight`, empty cell = unset):
- accounts: account_id, household_id, account_type, model_id, cash_usd, cash_reserve_usd,
  restricted, never_buy, esg_excluded, custom_targets, tax_short_term, tax_long_term and one
  `policy.<field>` column per policy field (`null` switches a band off). No lots: see `lots`.
- lots: account_id, lot_id, symbol, shares, cost_basis_usd_per_share, acquired_on (appended to
  existing accounts).
- models: model_id, name, symbol, weight, sleeve: one row per target (symbol + weight) or per
  sleeve (sleeve = the child model's id + weight), plus optional `policy.<field>` columns (taken
  from the model's first row). Models are imported children first when a file holds both. A model is all-or-nothing: if any of its rows is
  bad, every row of that model is rejected (a model missing a target would be a wrong model).
JSON Lines: one object per line, the API's shapes (AccountIn without lots, LotRowIn, ModelIn).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update

from trimtab.shared.errors import Invalid
from trimtab.shared.runtime import ServiceRuntime

from .book import (
    bump,
    existing_account_ids,
    load_books,
    model_policies_of,
    own_targets_of,
    sleeve_graph,
    upsert_model,
)
from .domain.rules import clean_policy
from .models import accounts, lots, model_portfolios
from .schemas import MAX_SHARES, ImportOut, ImportRejected, LotIn, ModelIn, PolicyIn, _In

Kind = Literal["accounts", "lots", "models"]
Format = Literal["csv", "jsonl"]
MAX_ROWS = 200_000
LIST_COLS = ("restricted", "never_buy", "esg_excluded")
ACCOUNT_COLS = ("account_id", "household_id", "advisor_id", "account_type", "model_id", "cash_usd", "cash_reserve_usd",
                *LIST_COLS, "custom_targets", "tax_short_term", "tax_long_term")
POLICY_COLS = tuple(f"policy.{k}" for k in PolicyIn.model_fields)
LOT_COLS = ("account_id", "lot_id", "symbol", "shares", "cost_basis_usd_per_share", "acquired_on")
MODEL_COLS = ("model_id", "name", "symbol", "weight", "sleeve")


class LotRowIn(LotIn):
    account_id: str


class ImportError_(ValueError):
    """The file as a whole cannot be read (not a row problem)."""


def _errors(e: ValidationError) -> list[str]:
    return [f"{'.'.join(str(x) for x in err['loc']) or '(row)'}: {err['msg']}" for err in e.errors()]


# ---------------------------------------------------------------- reading rows


def _rows(text: str, fmt: Format) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, raw row or an error message)."""
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, f"not JSON: {e.msg}"
                continue
            yield n, obj if isinstance(obj, dict) else "not a JSON object"
        return
    reader = csv.DictReader(io.StringIO(text))
    try:
        if not reader.fieldnames:
            return
        for row in reader:
            n = reader.line_num
            if None in row:
                yield n, "more cells than header columns"
                continue
            yield n, {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
    except csv.Error as e:
        # The reader cannot go on past it (where the next row starts is unknown): the whole file.
        n = reader.reader.line_num  # the line being read (DictReader's own count lags one row)
        if "field larger than field limit" in str(e):
            raise ImportError_(f"CSV line {n}: a cell is longer than {csv.field_size_limit()} "
                               "characters (no field takes that much)") from None
        raise ImportError_(f"CSV line {n}: not readable as CSV: {e}") from None


def _policy_from_flat(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in POLICY_COLS:
        v = row.pop(col, "")
        if v == "":
            continue
        out[col.split(".", 1)[1]] = None if v == "null" else v
    return out


def _account_from_csv(row: dict[str, Any]) -> dict[str, Any]:
    r = {k: v for k, v in row.items() if v != ""}
    pol = _policy_from_flat(r)
    for col in LIST_COLS:
        if col in r:
            r[col] = [x.strip() for x in str(r[col]).split(";") if x.strip()]
    if "custom_targets" in r:
        pairs = [x.split(":", 1) for x in str(r["custom_targets"]).split(";") if x.strip()]
        symbols = [p[0].strip() for p in pairs]
        ok = all(len(p) == 2 for p in pairs) and len(set(symbols)) == len(symbols)  # a repeat: refused
        r["custom_targets"] = {k.strip(): v.strip() for k, v in pairs} if ok else "bad"
    tax = {k: r.pop(f"tax_{k}") for k in ("short_term", "long_term") if f"tax_{k}" in r}
    if tax:
        r["tax_rates"] = tax
    if pol:
        r["policy"] = pol
    return r


# ---------------------------------------------------------------- import


async def import_rows(rt: ServiceRuntime, tenant: str, kind: Kind, fmt: Format, text: str) -> ImportOut:
    rows = list(_rows(text, fmt))
    if len(rows) > MAX_ROWS:
        raise ImportError_(f"at most {MAX_ROWS} rows per import")
    if kind == "accounts":
        return await _import_accounts(rt, tenant, fmt, rows)
    if kind == "lots":
        return await _import_lots(rt, tenant, rows)
    return await _import_models(rt, tenant, fmt, rows)


def _validate(model: type[BaseModel], n: int, raw: dict[str, Any] | str, key: str,
              rejected: list[ImportRejected]) -> Any:
    rid = raw.get(key) if isinstance(raw, dict) else None
    rid = rid if isinstance(rid, str) else None
    if isinstance(raw, str):
        rejected.append(ImportRejected(line=n, key=None, errors=[raw]))
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        rejected.append(ImportRejected(line=n, key=rid, errors=_errors(e)))
        return None


async def _import_accounts(rt: ServiceRuntime, tenant: str, fmt: Format,
                           rows: list[tuple[int, dict[str, Any] | str]]) -> ImportOut:
    from .service import bulk_import  # the same checks as POST /v1/accounts/bulk

    raws = [(n, _account_from_csv(r) if fmt == "csv" and isinstance(r, dict) else r) for n, r in rows]
    bad = [ImportRejected(line=n, key=None, errors=[r]) for n, r in raws if isinstance(r, str)]
    good = [(n, r) for n, r in raws if isinstance(r, dict)]
    out = await bulk_import(rt, tenant, [r for _, r in good]) if good else None
    rejected = bad + ([ImportRejected(line=good[x.index][0], key=x.account_id, errors=x.errors)
                       for x in out.rejected] if out else [])
    return ImportOut(kind="accounts", accepted=out.created if out else 0,
                     accepted_keys=out.created_ids if out else [], rejected=sorted(rejected, key=lambda x: x.line))


async def _import_lots(rt: ServiceRuntime, tenant: str, rows: list[tuple[int, dict[str, Any] | str]]) -> ImportOut:
    rejected: list[ImportRejected] = []
    valid: list[tuple[int, LotRowIn]] = []
    seen: set[tuple[str, str]] = set()
    for n, raw in rows:
        lot = _validate(LotRowIn, n, raw, "lot_id", rejected)
        if lot is None:
            continue
        if (lot.account_id, lot.lot_id) in seen:
            rejected.append(ImportRejected(line=n, key=lot.lot_id, errors=["lot_id: repeated in this file"]))
            continue
        seen.add((lot.account_id, lot.lot_id))
        valid.append((n, lot))
    async with rt.uow() as uow:
        s = uow.session
        ids = sorted({lot.account_id for _, lot in valid})
        known = await existing_account_ids(s, tenant, ids)
        # lock the accounts in key order (as every writer does), then check for existing lots
        if known:
            await s.execute(select(accounts.c.account_id).where(
                accounts.c.tenant_id == tenant, accounts.c.account_id.in_(sorted(known)))
                .order_by(accounts.c.account_id).with_for_update())
        books = await load_books(s, tenant, sorted(known))
        existing = {(a, lid) for a, b in books.items() for lid in (x.lot_id for x in b.lots)}
        # Shares held in all per account (stored and accepted so far): at most MAX_SHARES.
        held = {a: sum((x.shares for x in b.lots), Decimal(0)) for a, b in books.items()}
        good: list[LotRowIn] = []
        for n, lot in valid:
            if lot.account_id not in known:
                rejected.append(ImportRejected(line=n, key=lot.lot_id, errors=[f"account_id: unknown account {lot.account_id}"]))
            elif (lot.account_id, lot.lot_id) in existing:
                rejected.append(ImportRejected(line=n, key=lot.lot_id, errors=["lot_id: already exists"]))
            elif held.get(lot.account_id, Decimal(0)) + lot.shares > MAX_SHARES:
                rejected.append(ImportRejected(line=n, key=lot.lot_id, errors=[
                    f"shares: account {lot.account_id} would hold more than {MAX_SHARES} shares in all"]))
            else:
                held[lot.account_id] = held.get(lot.account_id, Decimal(0)) + lot.shares
                good.append(lot)
        if good:
            await s.execute(lots.insert(), [
                {"tenant_id": tenant, "account_id": x.account_id, "lot_id": x.lot_id, "symbol": x.symbol,
                 "shares": x.shares, "cost_basis_usd_per_share": x.cost_basis_usd_per_share,
                 "acquired_on": x.acquired_on} for x in good])
            await s.execute(update(accounts).where(
                accounts.c.tenant_id == tenant, accounts.c.account_id.in_(sorted({x.account_id for x in good})))
                .values(**bump()))
        await uow.commit()
    return ImportOut(kind="lots", accepted=len(good), accepted_keys=[f"{x.account_id}/{x.lot_id}" for x in good],
                     rejected=sorted(rejected, key=lambda x: x.line))


class _ModelRow(_In):
    model_id: str
    name: str
    symbol: str | None = None
    weight: Decimal | None = None
    sleeve: str | None = None


async def _import_models(rt: ServiceRuntime, tenant: str, fmt: Format,
                         rows: list[tuple[int, dict[str, Any] | str]]) -> ImportOut:
    rejected: list[ImportRejected] = []
    models: list[tuple[list[int], dict[str, Any]]] = []
    if fmt == "jsonl":
        models = [([n], r) for n, r in rows if isinstance(r, dict)]
        rejected += [ImportRejected(line=n, key=None, errors=[r]) for n, r in rows if isinstance(r, str)]
    else:
        grouped: dict[str, tuple[list[int], dict[str, Any]]] = {}
        poisoned: dict[str, list[str]] = {}
        for n, raw in rows:
            if isinstance(raw, str):
                rejected.append(ImportRejected(line=n, key=None, errors=[raw]))
                continue
            pol = _policy_from_flat(raw)
            r = _validate(_ModelRow, n, {k: v for k, v in raw.items() if v != ""}, "model_id", rejected)
            if r is None:
                mid = raw.get("model_id")
                if isinstance(mid, str) and mid:
                    poisoned.setdefault(mid, []).append(f"line {n}")
                continue
            lines, m = grouped.setdefault(r.model_id, ([], {"model_id": r.model_id, "name": r.name, "targets": {},
                                                            "models": {}}))
            lines.append(n)
            if pol and "policy" not in m:
                m["policy"] = pol
            if r.sleeve is not None and r.symbol is not None:
                poisoned.setdefault(r.model_id, []).append(f"line {n}: both symbol and sleeve")
            elif r.sleeve is not None:
                if r.sleeve in m["models"]:
                    poisoned.setdefault(r.model_id, []).append(f"line {n}: sleeve {r.sleeve} repeated")
                m["models"][r.sleeve] = str(r.weight) if r.weight is not None else None
            elif r.symbol is not None:
                if r.symbol in m["targets"]:
                    poisoned.setdefault(r.model_id, []).append(f"line {n}: {r.symbol} repeated")
                m["targets"][r.symbol] = str(r.weight) if r.weight is not None else None
            elif r.weight is not None:
                # A weight for nothing: dropped, its share would silently become cash.
                poisoned.setdefault(r.model_id, []).append(f"line {n}: a weight without a symbol or a sleeve")
        for mid, (lines, m) in grouped.items():
            if mid in poisoned:
                rejected += [ImportRejected(line=n, key=mid, errors=[f"model {mid} has rejected rows: "
                                                                     + ", ".join(poisoned[mid])]) for n in lines]
            else:
                models.append((lines, m))
    accepted: list[str] = []
    for lines, raw in _children_first(models):
        m = _validate(ModelIn, lines[0], raw, "model_id", rejected)
        if m is None:
            mid = raw.get("model_id") if isinstance(raw.get("model_id"), str) else None
            rejected += [ImportRejected(line=n, key=mid, errors=["see the model's first line"]) for n in lines[1:]]
            continue
        try:
            async with rt.uow() as uow:
                await upsert_model(uow.session, tenant, m.model_id, m.name, dict(m.targets),
                                   None if m.policy is None else m.policy.stored(), dict(m.models))
                await uow.commit()
        except Invalid as e:  # unknown sleeve, cycle, too deep: this model only
            rejected += [ImportRejected(line=n, key=m.model_id, errors=[e.detail]) for n in lines]
            continue
        accepted.append(m.model_id)
    return ImportOut(kind="models", accepted=len(accepted), accepted_keys=accepted,
                     rejected=sorted(rejected, key=lambda x: x.line))


def _children_first(models: list[tuple[list[int], dict[str, Any]]]) -> list[tuple[list[int], dict[str, Any]]]:
    """File order, except that a model comes after the sleeves it names from the same file
    (a cycle keeps file order; upsert_model then refuses it)."""
    by_id = {m.get("model_id"): k for k, (_, m) in enumerate(models)}
    order: list[int] = []
    done: set[int] = set()

    def visit(k: int, path: frozenset[int]) -> None:
        if k in done or k in path:
            return
        children = models[k][1].get("models")
        for c in children if isinstance(children, dict) else {}:
            if c in by_id:
                visit(by_id[c], path | {k})
        done.add(k)
        order.append(k)

    for k in range(len(models)):
        visit(k, frozenset())
    return [models[k] for k in order]


# ---------------------------------------------------------------- export


def _csv(cols: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows)


async def export_rows(rt: ServiceRuntime, tenant: str, kind: Kind, fmt: Format) -> str:
    assert rt.sessionmaker is not None
    async with rt.sessionmaker() as s:
        if kind == "models":
            ms = (await s.execute(select(model_portfolios).where(model_portfolios.c.tenant_id == tenant)
                                  .order_by(model_portfolios.c.model_id))).all()
            targets = await own_targets_of(s, tenant, [m.model_id for m in ms])
            graph = await sleeve_graph(s, tenant)
            policies = await model_policies_of(s, tenant, [m.model_id for m in ms])
            if fmt == "jsonl":
                return _jsonl([{"model_id": m.model_id, "name": m.name,
                                "targets": {k: str(v) for k, v in sorted(targets[m.model_id].items())},
                                "models": {k: str(v) for k, v in sorted(graph.get(m.model_id, {}).items())},
                                "policy": clean_policy(policies.get(m.model_id))} for m in ms])
            out = []
            for m in ms:
                pol = {f"policy.{k}": ("null" if v is None else v)
                       for k, v in clean_policy(policies.get(m.model_id)).items()}
                entries = ([(sym, w, None) for sym, w in sorted(targets[m.model_id].items())]
                           + [(None, w, c) for c, w in sorted(graph.get(m.model_id, {}).items())])
                for k, (sym, w, c) in enumerate(entries or [(None, None, None)]):
                    out.append({"model_id": m.model_id, "name": m.name, "symbol": sym, "weight": w, "sleeve": c,
                                **(pol if k == 0 else {})})
            return _csv(MODEL_COLS + POLICY_COLS, out)
        books = await load_books(s, tenant)
    if kind == "lots":
        rows = [{"account_id": a, "lot_id": x.lot_id, "symbol": x.symbol, "shares": str(x.shares),
                 "cost_basis_usd_per_share": str(x.cost_basis_usd_per_share), "acquired_on": x.acquired_on.isoformat()}
                for a, b in sorted(books.items()) for x in b.lots]
        return _jsonl(rows) if fmt == "jsonl" else _csv(LOT_COLS, rows)
    rows = []
    for a_id, b in sorted(books.items()):
        a = b.account
        rec: dict[str, Any] = {
            "account_id": a_id, "household_id": a.household_id, "advisor_id": a.advisor_id,
            "account_type": a.account_type,
            "model_id": a.model_id, "cash_usd": str(a.cash_usd), "cash_reserve_usd": str(a.cash_reserve_usd),
            "restricted": list(a.restricted or []), "never_buy": list(a.never_buy or []),
            "esg_excluded": list(a.esg_excluded or []), "custom_targets": a.custom_targets,
            "policy": clean_policy(a.policy),
            "tax_rates": {"short_term": str(a.tax_short_term), "long_term": str(a.tax_long_term)},
        }
        if fmt == "jsonl":
            rows.append({k: v for k, v in rec.items() if v is not None})
            continue
        flat = {k: rec[k] for k in ACCOUNT_COLS[:7]}
        flat |= {k: ";".join(rec[k]) for k in LIST_COLS}
        flat["custom_targets"] = ";".join(f"{k}:{v}" for k, v in (a.custom_targets or {}).items()) or None
        flat["tax_short_term"], flat["tax_long_term"] = rec["tax_rates"]["short_term"], rec["tax_rates"]["long_term"]
        flat |= {f"policy.{k}": ("null" if v is None else v) for k, v in rec["policy"].items()}
        rows.append(flat)
    return _jsonl(rows) if fmt == "jsonl" else _csv(ACCOUNT_COLS + POLICY_COLS, rows)
