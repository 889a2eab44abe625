"""The proposal lifecycle: its states, the legal transitions, and when the policy decides alone.

```
proposed ──risk──▶ assessed ──explanation──▶ ready ──▶ approved ──fills──▶ executed
    └──explanation──▶ explained ──risk──────────▲   │  (or overridden) └─fills + OMS unfilled
                                                    └─▶ rejected          reports──▶ unfilled
any open state ──TTL──▶ expired          a failed solve ──▶ failed (never tradable)
```

`unfilled`: every order of the approval is filled or reported by the OMS as never to be filled
(rejected, canceled, expired: `OrdersUnfilled`), and some shares never traded. Like `executed`
it ends the approval: the account's next proposal may be approved.

Risk and explanation arrive from two services in either order, and an event can be delivered
more than once under different ids (a producer retry), so attaching a part that is already there
changes nothing: readiness, and with it an automatic decision, happens exactly once.
Pure: no I/O, no clock; callers pass what they know.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal


class State(StrEnum):
    PROPOSED = "proposed"
    ASSESSED = "assessed"
    EXPLAINED = "explained"
    READY = "ready"
    APPROVED = "approved"
    REJECTED = "rejected"
    OVERRIDDEN = "overridden"
    EXECUTED = "executed"
    UNFILLED = "unfilled"
    FAILED = "failed"
    EXPIRED = "expired"


#: States in which a proposal still waits for something (and so can expire).
OPEN: frozenset[State] = frozenset({State.PROPOSED, State.ASSESSED, State.EXPLAINED, State.READY})
#: States a decision moves a proposal to.
DECIDED: frozenset[State] = frozenset({State.APPROVED, State.REJECTED, State.OVERRIDDEN, State.EXPIRED})
#: States whose orders were approved for trading, so fills may complete them (an override is an
#: approval of edited orders).
EXECUTABLE: frozenset[State] = frozenset({State.APPROVED, State.OVERRIDDEN})

DecisionKind = Literal["approved", "rejected", "overridden", "expired"]
Part = Literal["risk", "explanation"]

AUTOMATIC_APPROVER = "policy:automatic"
NO_TRADES_REASON = "no trades needed after rounding"


class TransitionError(Exception):
    """A transition the lifecycle does not allow from the current state."""

    def __init__(self, state: State, action: str) -> None:
        super().__init__(f"cannot {action} a proposal in state {state.value}")
        self.state = state
        self.action = action


@dataclass(frozen=True)
class Lifecycle:
    """What the lifecycle needs to know of one proposal."""

    state: State
    has_risk: bool = False
    has_explanation: bool = False

    @property
    def is_open(self) -> bool:
        return self.state in OPEN

    @property
    def is_executable(self) -> bool:
        """Its orders were approved for trading (approved, or overridden): fills may execute it."""
        return self.state in EXECUTABLE


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    decided_by: str
    automatic: bool
    reason: str | None = None


@dataclass(frozen=True)
class Attached:
    """The result of attaching a part: the new lifecycle, and whether this made it ready."""

    lifecycle: Lifecycle
    became_ready: bool
    duplicate: bool


def attach(lc: Lifecycle, part: Part) -> Attached:
    """Record that `part` (risk or explanation) arrived.

    A part arriving after the proposal was decided, failed or expired is recorded but moves
    nothing: the assessment is still worth keeping for the record, but a decision stands.
    """
    already = lc.has_risk if part == "risk" else lc.has_explanation
    if already:
        return Attached(lc, became_ready=False, duplicate=True)
    has_risk = lc.has_risk or part == "risk"
    has_explanation = lc.has_explanation or part == "explanation"
    state = lc.state
    if lc.is_open:
        if has_risk and has_explanation:
            state = State.READY
        elif has_risk:
            state = State.ASSESSED
        else:
            state = State.EXPLAINED
    new = Lifecycle(state, has_risk, has_explanation)
    return Attached(new, became_ready=lc.state != State.READY and state == State.READY, duplicate=False)


#: Risk flags that inform but do not stop an automatic approval (exact names or prefixes).
INFORMATIONAL_FLAGS = ("prior_used:", "still_above_tolerance")


def blocking_flags(flags: list[str] | tuple[str, ...]) -> list[str]:
    return [f for f in flags if not any(f == p or (p.endswith(":") and f.startswith(p)) for p in INFORMATIONAL_FLAGS)]


def automatic_decision(
    lc: Lifecycle, *, order_count: int, automation: str, risk_flags: list[str] | tuple[str, ...]
) -> Decision | None:
    """The decision the policy takes without a human, or None if an advisor must decide.

    An empty trade list needs nobody's review: it is rejected as soon as the proposal exists,
    so the drift monitor re-arms at once instead of waiting for risk and explanation.
    Otherwise only a ready proposal under an `automatic` policy with a clean risk assessment
    is approved alone: any blocking flag puts a human in the loop. Informational flags (a
    symbol measured with the model's prior for lack of history, a portfolio that was already
    above tolerance and does not get worse) do not block; every other flag, known or not, does.
    """
    if not lc.is_open:
        return None
    if order_count == 0:
        return Decision("rejected", AUTOMATIC_APPROVER, automatic=True, reason=NO_TRADES_REASON)
    if lc.state == State.READY and automation == "automatic" and not blocking_flags(risk_flags):
        return Decision("approved", AUTOMATIC_APPROVER, automatic=True)
    return None


_VERB = {"approved": "approve", "rejected": "reject", "overridden": "override", "expired": "expire"}

_DECISION_STATE: dict[str, State] = {
    "approved": State.APPROVED,
    "rejected": State.REJECTED,
    "overridden": State.OVERRIDDEN,
    "expired": State.EXPIRED,
}


def decide(lc: Lifecycle, decision: Decision) -> Lifecycle:
    """Apply a decision.

    People decide only ready proposals (they must have seen risk and explanation); the policy
    may also reject an empty proposal early, and the TTL expires any open one.
    """
    if decision.kind == "expired":
        if not lc.is_open:
            raise TransitionError(lc.state, "expire")
    elif decision.automatic and decision.kind == "rejected":
        if not lc.is_open:
            raise TransitionError(lc.state, "reject")
    elif lc.state != State.READY:
        raise TransitionError(lc.state, _VERB[decision.kind])
    if decision.kind in ("rejected", "overridden") and not decision.automatic and not (decision.reason or "").strip():
        raise ValueError(f"a decision {decision.kind!r} needs a reason")
    return replace(lc, state=_DECISION_STATE[decision.kind])


def execute(lc: Lifecycle, outcome: Literal["executed", "unfilled"] = "executed") -> Lifecycle:
    """Fills (and the OMS's unfilled reports) end an approved (or overridden: approved with edited
    orders) proposal as `executed` or `unfilled`; any other state is a transition error."""
    if not lc.is_executable:
        raise TransitionError(lc.state, "execute")
    return replace(lc, state=State.EXECUTED if outcome == "executed" else State.UNFILLED)
