"""Advisor decisions through the API, made idempotent by the `Idempotency-Key` header.

A client that retries a decision (a timeout, a double click) must not decide twice. The first
request with a key stores its response under (tenant, key) in the same transaction as the
decision and its events; a retry with the same key and the same request gets that stored
response back and changes nothing; the same key on a different request is refused (422).
The proposal row is locked before the key is looked up, so two concurrent requests with one key
run one after the other and the second sees the first's stored response.

Price guard: an approval (or an override, which approves edited orders) is refused with 409 when
the latest known price of an ordered symbol moved more than `PROPOSAL_MAX_PRICE_MOVE` since the
snapshot, even if the tick has not reached the tick handler's expiry yet; the proposal is expired
in the same request (committed before the 409), so every later decision sees it expired.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.auth import Principal
from trimtab.shared.canonical import canonical_hash
from trimtab.shared.errors import Conflict, Forbidden, Invalid, NotFound
from trimtab.shared.events import Order
from trimtab.shared.runtime import ServiceRuntime

from . import prices, proposals
from .domain.lifecycle import Decision, DecisionKind, TransitionError
from .domain.override import validate_override
from .models import idempotency_keys
from .schemas import ProposalOut


class PricesMoved(Conflict):
    title = "Prices moved since the snapshot"


class HouseholdTraded(Conflict):
    title = "The household traded since the solve"


@dataclass(frozen=True)
class DecisionResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def request_hash(principal: Principal, method: str, path: str, body: dict[str, Any]) -> str:
    # The subject is part of the request: another user cannot replay someone else's key.
    return canonical_hash({"method": method, "path": path, "subject": principal.subject, "body": body})


#: The scope of a supervisor (or a desk) that may decide any advisor's proposals.
DECIDE_ANY = "proposals:decide-any"


def may_decide(principal: Principal, advisor_id: str | None) -> bool:
    """A proposal in an advisor's queue is decided by that advisor (the token's subject) or by a
    holder of `DECIDE_ANY`; a proposal without an advisor by any holder of `proposals:decide`."""
    return advisor_id is None or principal.subject == advisor_id or DECIDE_ANY in principal.scopes


async def decide(
    runtime: ServiceRuntime, principal: Principal, proposal_id: uuid.UUID, kind: DecisionKind,
    reason: str | None, *, idempotency_key: str | None, req_hash: str,
    orders: list[Order] | None = None, max_price_move: Decimal | None = None,
) -> DecisionResult:
    """Take an advisor's decision. `max_price_move` defaults to the service's
    `PROPOSAL_MAX_PRICE_MOVE` (`runtime.settings`); 0 turns the price guard off."""
    if max_price_move is None:
        max_price_move = getattr(runtime.settings, "proposal_max_price_move", prices.DEFAULT_MAX_MOVE)
    if kind in ("rejected", "overridden") and not (reason or "").strip():
        raise Invalid(f"a decision {kind!r} needs a reason")
    async with runtime.uow() as uow:
        row = await proposals.load_for_update(uow, principal.tenant_id, proposal_id)
        if row is None:
            raise NotFound(f"proposal {proposal_id} not found")
        if not may_decide(principal, row.advisor_id):
            raise Forbidden(f"proposal {proposal_id} is in advisor {row.advisor_id}'s queue: only that "
                            f"advisor or a holder of {DECIDE_ANY!r} may decide it")
        replay = await _replayed(uow, principal, idempotency_key, req_hash)
        if replay is not None:
            return replay
        decision = Decision(kind, principal.subject, automatic=False, reason=reason)
        if orders is not None:
            # Re-validated against the proposal's own snapshot, inside the lock, with its context
            # plus the household's trades recorded since it was solved (a fill in another account
            # of the household since then can make an edited loss sale a wash sale).
            snapshot, _, context = await proposals.household_context(uow, row)
            orders = validate_override(snapshot, orders,
                                       context=context.model_dump(mode="json") if context else None)
        if kind in ("approved", "overridden"):
            # One account's approvals one at a time, and none while an earlier approval's orders
            # are still with the OMS: a second set of orders for the same book would trade the
            # account twice.
            await proposals.lock_account(uow, row)
            blocking = await proposals.awaiting_execution(uow, row)
            if blocking is not None:
                raise Conflict(f"proposal {blocking.proposal_id} of account {row.account_id} was {blocking.state} "
                               f"at {blocking.decided_at.isoformat()} and its orders are not all filled (nor reported "
                               "unfilled by the OMS on trades.unfilled.v1): a second approval would trade the "
                               "account twice", state=row.state,
                               awaiting_execution=str(blocking.proposal_id))
            expired, moves = await proposals.expire_if_prices_moved(
                uow, row, max_price_move, proposals.continuing(row), orders=orders)
            if expired is not None:
                # Expired for good (committed), then refused. The key stores nothing: a retry
                # with it finds the proposal expired and is refused (409) as well.
                await uow.commit()
                raise PricesMoved(f"not approved, the proposal expired: {expired.decision_reason}",
                                  state=expired.state, price_moves=[m.as_json() for m in moves],
                                  max_price_move=str(max_price_move))
        if kind == "approved":
            # The household's trades since the solve, checked as an override's orders are.
            expired, problems = await proposals.expire_if_household_traded(uow, row, proposals.continuing(row))
            if expired is not None:
                await uow.commit()
                raise HouseholdTraded(f"not approved, the proposal expired: {expired.decision_reason}",
                                      state=expired.state, violations=problems)
        try:
            row = await proposals.apply_decision(uow, row, decision, proposals.continuing(row),
                                                 orders=orders)
        except TransitionError as e:
            raise Conflict(str(e), state=row.state) from None
        body = ProposalOut.from_row(row).model_dump(mode="json")
        await _store(uow, principal, idempotency_key, req_hash, body)
        await uow.commit()
    return DecisionResult(200, body, replayed=False)


async def _replayed(uow: Any, principal: Principal, key: str | None, req_hash: str) -> DecisionResult | None:
    """The stored response of an earlier request with this key (None: the key is new)."""
    if key is None:
        return None
    stored = (await uow.session.execute(select(idempotency_keys).where(
        idempotency_keys.c.tenant_id == principal.tenant_id, idempotency_keys.c.key == key))).first()
    if stored is None:
        return None
    if stored.request_hash != req_hash:
        raise Invalid("this Idempotency-Key was used for a different request")
    return DecisionResult(stored.status_code, stored.response, replayed=True)


async def _store(uow: Any, principal: Principal, key: str | None, req_hash: str, body: dict[str, Any]) -> None:
    if key is None:
        return
    stored_now = (await uow.session.execute(insert(idempotency_keys).values(
        tenant_id=principal.tenant_id, key=key, request_hash=req_hash,
        subject=principal.subject, status_code=200, response=body,
    ).on_conflict_do_nothing().returning(idempotency_keys.c.key))).first()
    if stored_now is None:  # the same key, concurrently, on another proposal
        raise Conflict("this Idempotency-Key is being used by a concurrent request")


async def end_execution(runtime: ServiceRuntime, principal: Principal, proposal_id: uuid.UUID, reason: str, *,
                        idempotency_key: str | None, req_hash: str) -> DecisionResult:
    """A supervisor (`proposals:decide-any`) ends an approval the OMS will not finish and has not
    reported on, after confirming it with the OMS desk: what is left of each order (its shares
    less fills and earlier reports) is declared unfilled, `canceled`, with the supervisor's name
    and reason. It is published on `trades.unfilled.v1` as an OMS report would be (producer
    `optimizer`), so the drift monitor re-arms the account and the record holds who ended it
    and why; the proposal ends `unfilled` and the account's next approval is released. Its open
    proposals expire (`optimizer:execution-ended`): a ready automatic one is not approved on a
    person's word that the OMS stopped; the account's next drift is proposed afresh."""
    if DECIDE_ANY not in principal.scopes:
        raise Forbidden(f"ending an approval's execution needs the {DECIDE_ANY!r} scope (a supervisor)")
    if not reason.strip():
        raise Invalid("ending an approval's execution needs a reason")
    async with runtime.uow() as uow:
        row = await proposals.load_for_update(uow, principal.tenant_id, proposal_id)
        if row is None:
            raise NotFound(f"proposal {proposal_id} not found")
        replay = await _replayed(uow, principal, idempotency_key, req_hash)
        if replay is not None:
            return replay
        left = proposals.left_to_execute(row)
        if row.state not in proposals.AWAITING_EXECUTION or not left:
            raise Conflict(f"proposal {proposal_id} is {row.state}: no orders of it await execution",
                           state=row.state)
        row = await proposals.declare_unfilled(uow, row, report_id=f"operator:{uuid.uuid4()}", status="canceled",
                                               reason=f"ended by {principal.subject}: {reason.strip()}")
        # No automatic approval follows (unlike an OMS report): the orders were declared dead by
        # a person, not by the OMS; the account's open proposals expired (declare_unfilled) and
        # its next drift is proposed afresh.
        body = ProposalOut.from_row(row).model_dump(mode="json")
        await _store(uow, principal, idempotency_key, req_hash, body)
        await uow.commit()
    return DecisionResult(200, body, replayed=False)
