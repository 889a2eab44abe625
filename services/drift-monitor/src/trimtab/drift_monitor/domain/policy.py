"""Hysteresis of drift alerts: when an account may fire again.

armed --DriftDetected--> pending --approved/overridden--> executing --TradesExecuted--> armed
                          pending --rejected/expired--> armed (quiet for DRIFT_MIN_INTERVAL_S)
                                                        executing --OrdersUnfilled--> armed (quiet)

While pending or executing nothing more is emitted for the account: one drift, one proposal.
After a rejection the account re-arms but stays quiet for a minimum interval of wall time, so an
advisor who just said "not now" is not asked again on the next tick. Fills re-arm at once: the
account was just rebalanced, and any drift after that is new. An OMS report that orders of the
pending proposal will never fill (rejected, canceled, expired) re-arms like a refusal: nothing
traded, so the drift is likely still there, and asking again at once would likely meet the same
refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

DriftState = Literal["armed", "pending", "executing"]
ARMED: DriftState = "armed"
PENDING: DriftState = "pending"
EXECUTING: DriftState = "executing"
STATES: tuple[DriftState, ...] = (ARMED, PENDING, EXECUTING)


def may_fire(state: str, rearmed_at: datetime | None, now: datetime, min_interval_s: float) -> bool:
    if state != ARMED:
        return False
    return rearmed_at is None or (now - rearmed_at).total_seconds() >= min_interval_s


@dataclass(frozen=True)
class Transition:
    state: DriftState
    #: True when the account re-arms after a refusal or an unfilled report (its quiet interval
    #: starts now).
    rearmed: bool


def after_decision(state: str, decision: str) -> Transition:
    """State after a `RebalanceDecided` for the account."""
    if decision in ("rejected", "expired"):
        # Only a pending drift is answered by a refusal; a late refusal of an older proposal must
        # not release an account whose approved trades are still executing.
        if state == PENDING:
            return Transition(ARMED, True)
        return Transition(state, False)  # type: ignore[arg-type]
    # approved or overridden (an advisor's amended approval): trades are coming, wait for fills.
    return Transition(EXECUTING, False)


def after_unfilled(state: str, of_pending_proposal: bool) -> Transition:
    """State after an `OrdersUnfilled` report for the account: the OMS will never fill (some of)
    the orders of an approved proposal. Only the proposal the account is executing is answered
    by it; a report of another proposal (an older one, or one whose approval has not arrived
    yet) releases nothing."""
    if state == EXECUTING and of_pending_proposal:
        return Transition(ARMED, True)
    return Transition(state, False)  # type: ignore[arg-type]
