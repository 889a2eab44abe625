"""The one adapter between this service and `trimtab.rebalance.propose`, and where solves run.

Everything the service knows about the rebalancing library's signature is in `_solve` below, so a
change there is a one-place fix. Solves are CPU work and must not block the event loop; they run
in an executor:

- `solver_processes = 0` (default): one worker thread. Solves are serialized on purpose: the
  library caches one compiled cvxpy problem per shape and a solve writes its Parameters, so two
  threads solving at once would overwrite each other's data.
- `solver_processes = n > 0`: n worker processes, each with its own compiled problems (parallel
  solves; the GIL does not allow that with threads). Each worker compiles on first use.

The worker returns a plain `Outcome` (a proposal payload or a typed failure), never raises:
the library's exceptions carry constructor arguments that do not survive pickling, and a failed
solve is a result the service records, not a crash.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trimtab.shared.events import AccountSnapshot, OptimizerContext, RebalanceProposed
from trimtab.shared.workers import CpuWorkers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """Why no proposal could be made: `kind` is the typed error, `constraint` the one violated."""

    kind: str
    detail: str
    constraint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        head = f"{self.kind} ({self.constraint})" if self.constraint else self.kind
        return f"{head}: {self.detail}"


@dataclass(frozen=True)
class Outcome:
    proposal: RebalanceProposed | None = None
    failure: Failure | None = None


def _solve(snapshot_json: dict[str, Any], proposal_id: str, drift_id: str | None,
           context_json: dict[str, Any] | None = None) -> Outcome:
    """Run one proposal (in a worker); the only code that calls the rebalancing library.

    The event records the context exactly as the library used it (`RebalanceContext.to_json`,
    null when empty) and the driver weights, so the explainer and a replay re-solve the same problem.
    """
    snapshot = AccountSnapshot.model_validate(snapshot_json)
    pid = uuid.UUID(proposal_id)
    try:
        # Imported here (in the worker, inside the try): a library that cannot even load fails
        # this proposal with a typed reason like any other failure; it never trades.
        from trimtab.rebalance import InfeasibleProblem, RebalanceContext, RebalanceError, propose
    except Exception as e:  # noqa: BLE001
        return Outcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    try:
        context = RebalanceContext.from_json(context_json) if context_json else None
    except (ValueError, KeyError, TypeError) as e:
        return Outcome(failure=Failure("invalid_context", f"{type(e).__name__}: {e}"))
    if context == RebalanceContext():
        context = None
    try:
        p = propose(snapshot, proposal_id=pid, context=context)
        proposal = p.to_event(drift_id=uuid.UUID(drift_id) if drift_id else None).model_copy(update={
            "context": None if context is None else OptimizerContext.model_validate(context.to_json()),
            "driver_weights": {k: Decimal(repr(float(w))) for k, w in sorted(p.driver_weights.items())},
        })
    except InfeasibleProblem as e:
        return Outcome(failure=Failure("infeasible", e.detail, e.constraint, _strs(e.extra)))
    except RebalanceError as e:
        return Outcome(failure=Failure(_kind(e), e.detail, None, _strs(e.extra)))
    except Exception as e:  # noqa: BLE001 - a bug in a solve must fail this proposal, not trade
        log.exception("propose failed unexpectedly for %s", snapshot.account_id)
        return Outcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    return Outcome(proposal=proposal)


def _kind(e: Exception) -> str:
    """SolverFailed -> solver_failed, InvalidSnapshot -> invalid_snapshot."""
    name = type(e).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _strs(extra: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in extra.items()}


def _warm() -> bool:
    """Import the library and compile the common problem shapes in a worker (about 1 s), so
    the first proposal does not pay for them."""
    from trimtab.rebalance import warm_up

    warm_up()
    return True


class Engine:
    """Runs proposals off the event loop; start() before use, stop() at shutdown."""

    def __init__(self, solver_processes: int = 0) -> None:
        self._workers = CpuWorkers(solver_processes, name="optimizer-solve")

    def start(self) -> None:
        self._workers.start()

    async def warm(self) -> None:
        """Load the solver stack in the workers so the first proposal is not paying for imports."""
        await self._workers.warm(_warm)

    async def propose(self, snapshot: AccountSnapshot, *, proposal_id: uuid.UUID,
                      drift_id: uuid.UUID | None = None,
                      context: OptimizerContext | None = None) -> Outcome:
        return await self._workers.run(
            _solve, snapshot.model_dump(mode="json"), str(proposal_id),
            str(drift_id) if drift_id else None,
            context.model_dump(mode="json") if context is not None else None)

    def stop(self) -> None:
        self._workers.stop()
