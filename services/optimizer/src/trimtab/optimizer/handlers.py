"""Event handlers of the optimizer: one function per consumed event, one unit of work each.

The shared consumer has already recorded the event id when a handler runs (a redelivery never
gets here) and commits after it returns: the proposal's state, the events it emits and that
marker commit together. Handlers never commit. `max_price_move` is the optimizer's
`PROPOSAL_MAX_PRICE_MOVE` (app.py binds it): a proposal whose prices moved further since its
snapshot expires instead of being decided (prices.py).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from pydantic import ValidationError

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import (
    AccountSnapshot,
    DriftDetected,
    ExplanationCreated,
    OrdersUnfilled,
    PriceTicked,
    RiskAssessed,
    TradesExecuted,
)
from trimtab.shared.outbox import UnitOfWork

from . import household, prices, proposals
from . import metrics as opt_metrics
from .engine import Engine, Failure

log = logging.getLogger(__name__)


def _parse(env: Envelope, model):  # type: ignore[no-untyped-def]
    try:
        return env.parse(model)
    except ValidationError as e:
        # Bad content never becomes good by retrying: dead-letter it at once.
        raise PermanentEventError(f"{env.event_type} {env.event_id} is invalid: {e}") from None


async def on_drift_detected(env: Envelope, uow: UnitOfWork, *, engine: Engine,
                            max_price_move: Decimal = prices.DEFAULT_MAX_MOVE,
                            execution_window_s: float | None = None) -> None:
    """Solve the drifted account's snapshot and store + publish the proposal (or its failure)."""
    drift: DriftDetected = _parse(env, DriftDetected)
    if drift.snapshot.account_id != drift.account_id:
        raise PermanentEventError(
            f"drift {drift.drift_id}: snapshot is of {drift.snapshot.account_id}, not {drift.account_id}")
    if await proposals.find_by_drift(uow, env.tenant_id, drift.drift_id) is not None:
        # The same drift sent again under a new event id: its proposal exists, solve nothing.
        log.info("drift %s already has a proposal", drift.drift_id)
        return
    proposal_id = proposals.proposal_id_for(env.tenant_id, drift.drift_id)
    missing = await household.executions_missing(uow.session, env.tenant_id, drift.snapshot)
    if missing:
        # The drift monitor built the snapshot before applying fills this service already
        # recorded: the book is stale. Refused like an infeasible solve (the drift monitor
        # re-arms; its next drift carries the fills).
        failure = Failure(kind="StaleSnapshot", constraint="applied_executions", detail=(
            f"the snapshot misses execution(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            "of the account, recorded here but not yet applied to the drift monitor's book"))
        log.warning("drift %s: %s", drift.drift_id, failure.reason)
        opt_metrics.proposals.add(1, {"outcome": "failed", "reason": opt_metrics.failure_label(
            failure.kind, failure.constraint)})
        await proposals.record_failure(uow, env, drift, proposal_id, failure)
        return
    # The drift's context (mandate), the reference data of its symbols (market data and the
    # factor model, where the drift has none) and the household's trades of the wash-sale window.
    context = await household.context_for(uow.session, env.tenant_id, drift.snapshot, drift.context)
    t0 = time.perf_counter()
    outcome = await engine.propose(drift.snapshot, proposal_id=proposal_id, drift_id=drift.drift_id,
                                   context=context)
    result = "failed" if outcome.failure is not None else "proposed"
    opt_metrics.solve_duration.record((time.perf_counter() - t0) * 1e3, {"outcome": result})
    opt_metrics.proposals.add(1, {"outcome": result, "reason": "none" if outcome.failure is None else
                                  opt_metrics.failure_label(outcome.failure.kind, outcome.failure.constraint)})
    if outcome.failure is not None:
        log.warning("drift %s: no proposal: %s", drift.drift_id, outcome.failure.reason)
        await proposals.record_failure(uow, env, drift, proposal_id, outcome.failure)
        return
    assert outcome.proposal is not None
    await proposals.record_proposal(uow, env, drift, outcome.proposal, max_price_move=max_price_move,
                                    execution_window_s=execution_window_s)


async def on_risk_assessed(env: Envelope, uow: UnitOfWork, *,
                           max_price_move: Decimal = prices.DEFAULT_MAX_MOVE) -> None:
    risk: RiskAssessed = _parse(env, RiskAssessed)
    await _attach(env, uow, risk.proposal_id, "risk", risk.model_dump(mode="json"),
                  max_price_move=max_price_move)


async def on_explanation_created(env: Envelope, uow: UnitOfWork, *,
                                 max_price_move: Decimal = prices.DEFAULT_MAX_MOVE) -> None:
    explanation: ExplanationCreated = _parse(env, ExplanationCreated)
    await _attach(env, uow, explanation.proposal_id, "explanation", explanation.model_dump(mode="json"),
                  snapshot_hash=explanation.snapshot_hash, max_price_move=max_price_move)


async def _attach(env: Envelope, uow: UnitOfWork, proposal_id, part, payload,  # type: ignore[no-untyped-def]
                  snapshot_hash: str | None = None, *, max_price_move: Decimal) -> None:
    row = await proposals.load_for_update(uow, env.tenant_id, proposal_id)
    # Unknown (another tenant's id, another deployment's proposal) or about something else
    # than what was proposed: such a part must not make a proposal ready. Dead-lettering would
    # park every later event of the account, so it is logged and dropped instead.
    if row is None:
        log.warning("%s %s for unknown proposal %s (tenant %s): ignored",
                    env.event_type, env.event_id, proposal_id, env.tenant_id)
        return
    if payload["account_id"] != row.account_id or (
            snapshot_hash is not None and snapshot_hash != row.snapshot_hash):
        log.warning("%s %s does not match proposal %s (account %s, snapshot %s): ignored",
                    env.event_type, env.event_id, proposal_id, row.account_id, row.snapshot_hash)
        return
    await proposals.attach_part(uow, env, row, part, payload, max_price_move=max_price_move)


async def on_trades_executed(env: Envelope, uow: UnitOfWork) -> None:
    """Fills of a proposal advance it; every fill (a manual trade's too) goes into the household
    ledger the wash-sale rule of later proposals reads."""
    executed: TradesExecuted = _parse(env, TradesExecuted)
    if executed.proposal_id is None:
        # Not from a proposal (e.g. a manual trade): the household and lot bases are the ones of
        # the account's latest snapshot, if the optimizer has seen one.
        snapshot = await household.latest_snapshot(uow, env.tenant_id, executed.account_id)
        await household.record_fills(uow, env.tenant_id, executed.account_id, executed.execution_id,
                                     executed.fills, snapshot=snapshot, proposal_id=None)
        await proposals.expire_after_trades(uow, env.tenant_id, executed.account_id, executed.execution_id)
        return
    row = await proposals.load_for_update(uow, env.tenant_id, executed.proposal_id)
    if row is None:
        # The trade happened all the same: it joins the ledger as a manual trade would, or a
        # later proposal could buy back a loss it sold (a wash sale).
        log.warning("fills %s for unknown proposal %s: recorded as trades of the account only",
                    executed.execution_id, executed.proposal_id)
        snapshot = await household.latest_snapshot(uow, env.tenant_id, executed.account_id)
        await household.record_fills(uow, env.tenant_id, executed.account_id, executed.execution_id,
                                     executed.fills, snapshot=snapshot, proposal_id=None)
        await proposals.expire_after_trades(uow, env.tenant_id, executed.account_id, executed.execution_id)
        return
    await household.record_fills(uow, env.tenant_id, row.account_id, executed.execution_id, executed.fills,
                                 snapshot=AccountSnapshot.model_validate(row.snapshot),
                                 proposal_id=row.proposal_id)
    await proposals.record_fills(uow, row, executed.execution_id, executed.fills)
    # The account's other open proposals were solved on the book before these fills.
    await proposals.expire_after_trades(uow, env.tenant_id, row.account_id, executed.execution_id)


async def on_orders_unfilled(env: Envelope, uow: UnitOfWork, *,
                             max_price_move: Decimal = prices.DEFAULT_MAX_MOVE) -> None:
    """The OMS will never fill these orders (rejected, canceled, expired): with the fills they end
    the approval (`unfilled`, or `executed`), which releases the account for its next approval;
    a ready proposal the policy would have approved but for this one is approved now.

    A report that cannot apply (unknown proposal, another account, a proposal never approved, an
    order it does not hold, more shares than an order has) is dead-lettered with the reason: the
    OMS and Trimtab disagree about what was sent, which a person must look at. It does not park
    the account's key: each report is about its own orders, so the account's later reports (of
    its next approval) still apply. A report overlapping earlier ones (the OMS's final report
    after a supervisor ended the approval) counts only for what they left."""
    report: OrdersUnfilled = _parse(env, OrdersUnfilled)
    row = await proposals.load_for_update(uow, env.tenant_id, report.proposal_id)
    if row is None:
        raise PermanentEventError(f"unfilled report {report.report_id} for unknown proposal {report.proposal_id}",
                                  park=False)
    if row.account_id != report.account_id:
        raise PermanentEventError(f"unfilled report {report.report_id} names account {report.account_id}; "
                                  f"proposal {row.proposal_id} is of {row.account_id}", park=False)
    try:
        after = await proposals.record_unfilled(uow, row, report)
    except proposals.UnfilledReportRefused as e:
        raise PermanentEventError(str(e), park=False) from None
    if after.state != row.state:
        log.info("proposal %s: %s (OMS report %s)", row.proposal_id, after.state, report.report_id)
        await proposals.release_waiting(uow, env.tenant_id, row.account_id, max_price_move)


async def on_price_ticks(envs: list[Envelope], uow: UnitOfWork, *, max_price_move: Decimal) -> None:
    """A run of ticks (one transaction): keep the newest price per (tenant, symbol), then expire
    every open proposal with an order in a symbol whose price moved beyond the limit since the
    proposal's snapshot. One upsert and one indexed query per run, whatever its length; a tick
    older than the stored price (late delivery) changes nothing, nor does a redelivered one."""
    ticks = [(env, _parse(env, PriceTicked)) for env in envs]
    quotes = prices.newest_per_symbol((env.tenant_id, t) for env, t in ticks)
    changed = await prices.record_quotes(uow.session, quotes)
    if max_price_move <= 0 or not changed:
        return
    causes: dict[tuple[str, str], Envelope] = {}
    for env, t in ticks:  # the tick that set each new price: the last one at the newest time
        k = (env.tenant_id, t.symbol)
        if k in changed and prices.aware(t.as_of) == changed[k].as_of:
            causes[k] = env
    expired = 0
    for row in await prices.proposals_moved_beyond(uow.session, changed, max_price_move):
        mine = {s: q for (tenant, s), q in changed.items() if tenant == row.tenant_id}
        by_symbol = {s: e for (tenant, s), e in causes.items() if tenant == row.tenant_id}
        if await proposals.expire_for_ticks(uow, row, mine, max_price_move, by_symbol) is not None:
            expired += 1
    if expired:
        log.info("%d tick(s) on %d symbol(s): %d proposal(s) expired on price moves",
                 len(envs), len(changed), expired)
