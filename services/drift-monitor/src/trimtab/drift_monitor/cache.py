"""Keeps each tenant's in-memory drift engine in step with PostgreSQL, cheaply.

Rebuild (start-up, first use of a tenant, or after a large change): the book is streamed with
COPY ... TO STDOUT (CSV) inside one transaction, parsed by pandas and laid out by the engine in
one vectorized pass; lots are summed per (account, symbol) by PostgreSQL.

Sync (before every screen, inside the tick handler's transaction): instead of re-reading every
price and every account revision, it reads only rows whose `changed_xid` (the id of the last
transaction that wrote them) is >= the engine's *floor*, by an indexed range query, and reloads
the accounts among them whose revision the engine does not hold.

Why that cannot miss a change, across replicas and with late commits: at each sync the floor
becomes min(xmin of the current snapshot, our own transaction id), taken before the reads. Every
transaction not yet visible to that sync was running at the snapshot (so its xid >= xmin) or
started later (xid >= xmax >= xmin), or is our own (xid >= floor); its rows carry that xid, so
the next sync, asking for changed_xid >= floor, sees them once committed. Rows written by
transactions below the floor were committed and visible to this sync or an earlier one. xid8
never wraps. The cost is proportional to the rows written since the oldest transaction still
running in the cluster, not to the book (a long transaction elsewhere only widens the window).

What the engine applies in-process before its transaction commits (the ticked price) is
re-read at the next sync (`touched`), so a rolled-back tick cannot leave a wrong price behind.
Likewise the rows a sync reads while its own transaction wrote them (a batch of ticks shares one
transaction: a tick fires an account, the next tick's sync reads the account's new state) are
*tentative*: the first sync in another transaction re-reads them whatever their revision, so a
batch that rolls back cannot leave its uncommitted account states or prices in the engine.

Only the consumer task calls `sync` (events are handled one at a time), so no lock is needed.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .book import Book, expanded_targets, load_books, sleeve_graph
from .domain.engine import DriftEngine, EngineAccount
from .domain.policy import ARMED
from .domain.rules import effective_targets, resolve_policy
from .models import SCHEMA, accounts, model_portfolios, model_targets, prices, withdrawals

log = logging.getLogger(__name__)

#: Stale accounts above which a full rebuild is cheaper than reloading them one by one.
REBUILD_ABOVE = 5_000
#: The floor, and this transaction's own id (null before it writes anything).
FLOOR_AND_OWN_SQL = text(
    "SELECT (LEAST(pg_snapshot_xmin(pg_current_snapshot()),"
    " COALESCE(pg_current_xact_id_if_assigned(), pg_snapshot_xmin(pg_current_snapshot())))::text)::bigint,"
    " (pg_current_xact_id_if_assigned()::text)::bigint")
DAY_S = 86_400.0


def engine_account(book: Book) -> EngineAccount:
    """A stored account as the engine sees it (floats; effective targets and policy)."""
    a = book.account
    p = book.policy
    last = a.last_rebalanced_at
    return EngineAccount(
        account_id=a.account_id, revision=a.revision, cash_usd=float(a.cash_usd),
        band_abs=None if p.band_abs is None else float(p.band_abs),
        band_rel=None if p.band_rel is None else float(p.band_rel),
        shares={k: float(v) for k, v in book.shares_by_symbol().items()},
        targets={k: float(v) for k, v in book.targets.items() if v > 0},
        blocked=a.drift_state != ARMED,
        rearmed_at_s=a.rearmed_at.timestamp() if a.rearmed_at else None,
        portfolio_band=None if p.portfolio_band is None else float(p.portfolio_band),
        cash_trigger_usd=None if p.cash_trigger_usd is None else float(p.cash_trigger_usd),
        cash_reserve_usd=float(a.cash_reserve_usd), withdrawal_usd=float(book.withdrawal_usd),
        never_trade=frozenset(a.restricted or []),
        rebalance_from_s=(last.timestamp() + p.min_interval_days * DAY_S) if last else -np.inf,
    )


@dataclass
class TenantEngine:
    engine: DriftEngine = field(default_factory=DriftEngine)
    floor: int | None = None  # None: not built yet
    touched_symbols: set[str] = field(default_factory=set)
    #: Rows this engine read while they were written by a transaction not yet committed (its
    #: own: a batch of ticks shares one): the id of that transaction, and the accounts and
    #: symbols read from it. The first sync in another transaction re-reads them whatever
    #: their revision, so a rolled-back batch cannot leave its state in the engine.
    tentative_xid: int | None = None
    tentative_accounts: set[str] = field(default_factory=set)
    tentative_symbols: set[str] = field(default_factory=set)


@dataclass
class SyncStats:
    rebuilds: int = 0
    syncs: int = 0
    accounts_reloaded: int = 0
    last_rebuild_s: float = 0.0


class BookCache:
    def __init__(self) -> None:
        self._tenants: dict[str, TenantEngine] = {}
        self.stats = SyncStats()

    def engine(self, tenant: str) -> DriftEngine:
        return self._state(tenant).engine

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def _state(self, tenant: str) -> TenantEngine:
        return self._tenants.setdefault(tenant, TenantEngine())

    def touch_symbol(self, tenant: str, symbol: str) -> None:
        """`symbol`'s price was applied in-process by a transaction that may not commit."""
        self._state(tenant).touched_symbols.add(symbol)

    async def sync(self, s: AsyncSession, tenant: str) -> DriftEngine:
        """The tenant's engine, current with the database as this transaction sees it."""
        st = self._state(tenant)
        if st.floor is None:
            await self.rebuild(s, tenant)
            return st.engine
        self.stats.syncs += 1
        eng = st.engine
        floor, own = (await s.execute(FLOOR_AND_OWN_SQL)).one()
        floor = int(floor)
        forced: set[str] = set()
        if st.tentative_xid is not None and st.tentative_xid != own:
            # Another transaction: whatever that one wrote is committed or gone; read it again.
            forced = set(st.tentative_accounts)
            st.touched_symbols |= st.tentative_symbols
            st.tentative_xid = None
            st.tentative_accounts, st.tentative_symbols = set(), set()
        touched = sorted(st.touched_symbols)
        cond = prices.c.changed_xid >= st.floor
        if touched:
            cond = or_(cond, prices.c.symbol.in_(touched))
        for r in await s.execute(select(prices.c.symbol, prices.c.price_usd, prices.c.changed_xid)
                                 .where(prices.c.tenant_id == tenant, cond)):
            eng.set_price(r.symbol, float(r.price_usd))
            if own is not None and r.changed_xid == own:
                st.tentative_symbols.add(r.symbol)
        acct_cond = accounts.c.changed_xid >= st.floor
        if forced:
            acct_cond = or_(acct_cond, accounts.c.account_id.in_(sorted(forced)))
        changed = (await s.execute(select(accounts.c.account_id, accounts.c.revision, accounts.c.changed_xid)
                                   .where(accounts.c.tenant_id == tenant, acct_cond))).all()
        stale = sorted(r.account_id for r in changed
                       if r.account_id in forced or eng.revision(r.account_id) != r.revision)
        mine = {r.account_id for r in changed if own is not None and r.changed_xid == own}
        if mine or st.tentative_symbols:
            st.tentative_xid = own
            st.tentative_accounts |= mine
        for account_id in forced - {r.account_id for r in changed}:
            if eng.revision(account_id) is not None:  # created by a rolled-back transaction
                eng.remove(account_id)
        if len(stale) > REBUILD_ABOVE:
            await self.rebuild(s, tenant)
            return st.engine
        if stale:
            books = await load_books(s, tenant, stale)
            for b in books.values():
                eng.upsert(engine_account(b))
            self.stats.accounts_reloaded += len(books)
        st.floor = floor
        st.touched_symbols.clear()
        return eng

    async def rebuild(self, s: AsyncSession, tenant: str) -> DriftEngine:
        """Build the tenant's engine from the database (COPY + one vectorized layout)."""
        t0 = time.perf_counter()
        st = self._state(tenant)
        floor, own = (await s.execute(FLOOR_AND_OWN_SQL)).one()
        eng = DriftEngine()
        await load_engine(s, tenant, eng)
        st.engine, st.floor = eng, int(floor)
        st.touched_symbols.clear()
        st.tentative_xid, st.tentative_accounts, st.tentative_symbols = None, set(), set()
        if own is not None:  # what this (uncommitted) transaction wrote is tentative too
            st.tentative_accounts = set((await s.execute(select(accounts.c.account_id).where(
                accounts.c.tenant_id == tenant, accounts.c.changed_xid == own))).scalars())
            st.tentative_symbols = set((await s.execute(select(prices.c.symbol).where(
                prices.c.tenant_id == tenant, prices.c.changed_xid == own))).scalars())
            if st.tentative_accounts or st.tentative_symbols:
                st.tentative_xid = int(own)
        self.stats.rebuilds += 1
        self.stats.last_rebuild_s = time.perf_counter() - t0
        log.info("drift engine for tenant %s rebuilt: %d accounts x %d securities in %.2fs", tenant, len(eng),
                 len(eng.symbols), self.stats.last_rebuild_s)
        return eng

    async def warm(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Build every tenant's engine from the database (start-up)."""
        async with sessionmaker() as s:
            tenants = (await s.execute(select(accounts.c.tenant_id).distinct())).scalars().all()
            for t in tenants:
                await self.rebuild(s, t)
            await s.rollback()


async def _copy_csv(s: AsyncSession, query: str, *args: Any) -> io.BytesIO:
    """COPY (query) TO STDOUT as CSV through the session's own connection (same transaction)."""
    conn = await s.connection()
    raw = await conn.get_raw_connection()
    buf = io.BytesIO()
    await raw.driver_connection.copy_from_query(query, *args, output=buf, format="csv")  # type: ignore[union-attr]
    buf.seek(0)
    return buf


def _read_csv(buf: io.BytesIO, names: list[str], **kw: Any) -> pd.DataFrame:
    if not buf.getbuffer().nbytes:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in names})
    return pd.read_csv(buf, header=None, names=names, keep_default_na=False, **kw)


def _json_list(v: str) -> list[str]:
    return [] if not v or v == "[]" else list(json.loads(v))


async def load_engine(s: AsyncSession, tenant: str, eng: DriftEngine) -> None:
    """Fill `eng` with the tenant's whole book and prices."""
    for r in await s.execute(select(prices.c.symbol, prices.c.price_usd).where(prices.c.tenant_id == tenant)):
        eng.set_price(r.symbol, float(r.price_usd))
    m_policy = {r.model_id: dict(r.policy or {}) for r in await s.execute(
        select(model_portfolios.c.model_id, model_portfolios.c.policy).where(model_portfolios.c.tenant_id == tenant))}
    own: dict[str, dict[str, Decimal]] = {m: {} for m in m_policy}
    for r in await s.execute(select(model_targets).where(model_targets.c.tenant_id == tenant)):
        own.setdefault(r.model_id, {})[r.symbol] = r.weight
    # Accounts on a sleeve model drift against its expanded targets.
    m_targets = expanded_targets(own, own, await sleeve_graph(s, tenant))
    wd = {r.account_id: float(r.total) for r in await s.execute(
        select(withdrawals.c.account_id, func.sum(withdrawals.c.amount_usd).label("total"))
        .where(withdrawals.c.tenant_id == tenant, withdrawals.c.status == "open").group_by(withdrawals.c.account_id))}
    acc = _read_csv(await _copy_csv(s, (
        "SELECT account_id, revision, cash_usd::float8, cash_reserve_usd::float8, model_id, policy::text,"
        " restricted::text, never_buy::text, esg_excluded::text, coalesce(custom_targets::text, ''),"
        " (drift_state <> 'armed')::int, extract(epoch from rearmed_at)::float8,"
        f" extract(epoch from last_rebalanced_at)::float8 FROM {SCHEMA}.accounts WHERE tenant_id = $1"
        " ORDER BY account_id"), tenant), na_values={"rearmed": [""], "last_rebal": [""]},
        names=["id", "rev", "cash", "reserve", "model", "policy", "restricted", "never_buy", "esg", "custom",
               "blocked", "rearmed", "last_rebal"],
        dtype={"id": str, "model": str, "policy": str, "restricted": str, "never_buy": str, "esg": str,
               "custom": str})
    n = len(acc)
    ids = acc["id"].tolist()
    row_of = {a: i for i, a in enumerate(ids)}
    # Raw lots, summed per (account, symbol) below: PostgreSQL's GROUP BY over millions of lots
    # costs more than streaming them. Categories give integer codes without sorting strings.
    hold = _read_csv(await _copy_csv(s, (
        f"SELECT account_id, symbol, shares::float8 FROM {SCHEMA}.lots WHERE tenant_id = $1"), tenant),
        names=["id", "symbol", "shares"], dtype={"id": "category", "symbol": "category"})
    if len(hold):
        id_cat = hold["id"].cat
        cat_row = np.array([row_of.get(x, -1) for x in id_cat.categories] or [-1], np.int64)
        h_row_all = cat_row[id_cat.codes.to_numpy()]
        sym_names = [str(x) for x in hold["symbol"].cat.categories]
        h_code_all = hold["symbol"].cat.codes.to_numpy().astype(np.int64)
        h_sh_all = hold["shares"].to_numpy(float)
    else:
        h_row_all, h_code_all, h_sh_all, sym_names = (np.empty(0, np.int64), np.empty(0, np.int64),
                                                      np.empty(0), [])
    # Policies and effective targets: computed once per distinct combination, not per account.
    pol_cache: dict[tuple[str, str], Any] = {}
    tgt_cache: dict[tuple[str, str, str, str], int] = {}
    groups: list[dict[str, float]] = []
    group_of = np.empty(n, np.int64)
    band_abs, band_rel = np.full(n, np.nan), np.full(n, np.nan)
    port, ctrig, min_days = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
    cols = zip(acc["model"], acc["policy"], acc["custom"], acc["never_buy"], acc["esg"], strict=True)
    for i, (model, pol, custom, nb, esg) in enumerate(cols):
        p = pol_cache.get((model, pol))
        if p is None:
            p = pol_cache[(model, pol)] = resolve_policy(m_policy.get(model), json.loads(pol) if pol else None)
        band_abs[i] = np.nan if p.band_abs is None else float(p.band_abs)
        band_rel[i] = np.nan if p.band_rel is None else float(p.band_rel)
        port[i] = np.nan if p.portfolio_band is None else float(p.portfolio_band)
        ctrig[i] = np.nan if p.cash_trigger_usd is None else float(p.cash_trigger_usd)
        min_days[i] = p.min_interval_days
        key = (model, custom, nb, esg)
        g = tgt_cache.get(key)
        if g is None:
            base = ({k: Decimal(str(v)) for k, v in json.loads(custom).items()} if custom
                    else m_targets.get(model, {}))
            eff = effective_targets(base, frozenset(_json_list(nb)) | frozenset(_json_list(esg)))
            g = tgt_cache[key] = len(groups)
            groups.append({k: float(v) for k, v in eff.items() if v > 0})
        group_of[i] = g
    # Entries: holdings and targets, merged on (row, symbol) by integer key.
    code_of = {x: k for k, x in enumerate(sym_names)}
    for g in groups:
        for x in g:
            if x not in code_of:
                code_of[x] = len(sym_names)
                sym_names.append(x)
    keep = h_row_all >= 0
    h_row, h_code, h_sh = h_row_all[keep], h_code_all[keep], h_sh_all[keep]
    t_rows, t_codes, t_w = [h_row], [h_code], [np.zeros(h_row.size)]
    order = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[order], np.arange(len(groups) + 1))
    for g, tg in enumerate(groups):
        rows_g = order[bounds[g]:bounds[g + 1]]
        if not tg or rows_g.size == 0:
            continue
        t_rows.append(np.repeat(rows_g, len(tg)))
        t_codes.append(np.tile(np.array([code_of[x] for x in tg], np.int64), rows_g.size))
        t_w.append(np.tile(np.array(list(tg.values())), rows_g.size))
    nsym = max(len(sym_names), 1)
    key = np.concatenate(t_rows) * nsym + np.concatenate(t_codes)
    ukey, inv = np.unique(key, return_inverse=True)
    nh = h_row.size
    sh = np.bincount(inv[:nh], h_sh, minlength=ukey.size)
    tgw = np.bincount(inv, np.concatenate(t_w), minlength=ukey.size)
    e_row, e_code = ukey // nsym, ukey % nsym
    never = np.zeros(ukey.size, bool)
    restricted = acc["restricted"].to_numpy()
    for i in np.nonzero(restricted != "[]")[0]:
        blocked_syms = set(_json_list(restricted[i]))
        lo, hi = np.searchsorted(e_row, [i, i + 1])
        for k in range(lo, hi):
            never[k] = sym_names[e_code[k]] in blocked_syms
    last = acc["last_rebal"].to_numpy(float)
    eng.load(ids, {
        "revision": acc["rev"].to_numpy(np.int64), "cash_usd": acc["cash"].to_numpy(float),
        "cash_reserve_usd": acc["reserve"].to_numpy(float), "portfolio_band": port, "cash_trigger_usd": ctrig,
        "withdrawal_usd": np.array([wd.get(a, 0.0) for a in ids]) if wd else np.zeros(n),
        "blocked": acc["blocked"].to_numpy(bool), "rearmed_at_s": acc["rearmed"].to_numpy(float),
        "rebalance_from_s": np.where(np.isnan(last), -np.inf, last + min_days * DAY_S),
    }, e_row, e_code, sh, tgw, never_trade=never, band_abs=band_abs, band_rel=band_rel, symbol_names=sym_names)
