"""Hysteresis of drift alerts: when an account may fire again.

armed --DriftDetected--> pending --approved/overridden--> executing --TradesExecuted--> armed
                          pending --rejected/expired--> armed (quiet for DRIFT_MIN_INTERVAL_S)

While pending or executing nothing more is emitted for the account: one drift, one proposal.
After a rejection the account re-arms but stays quiet for a minimum interval of wall time, so an
advisor who just said "not now" is not asked again on the next tick. Fills re-arm at once: the
account was just rebalanced, and any drift after that is new.
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
    #: True when the account re-arms after a refusal (its quiet interval starts now).
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
