"""The one adapter between this service and `trimtab.rebalance.propose`, and where solves run.

Everything the service knows about the rebalancing library's signature is in `_solve` (one
account) and `_solve_household` (household mode) below, so a change there is a one-place fix. Solves are CPU work and must not block the event loop; they run
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
from trimtab.shared.money import usd
from trimtab.shared.workers import CpuWorkers, WorkerCrashed

from . import metrics as opt_metrics
from .schemas import (
    DroppedOrder,
    HouseholdAccountOut,
    HouseholdExplanationOut,
    HouseholdTradeWhy,
    HouseholdWhatIfOut,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """Why no proposal could be made: `kind` is the typed error, `constraint` the one violated."""

    kind: str
    detail: str
    constraint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: Household mode: the accounts the failure is about, when the library names them.
    account_ids: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        head = f"{self.kind} ({self.constraint})" if self.constraint else self.kind
        return f"{head}: {self.detail}"


@dataclass(frozen=True)
class Outcome:
    proposal: RebalanceProposed | None = None
    failure: Failure | None = None


@dataclass(frozen=True)
class HouseholdOutcome:
    proposal: HouseholdWhatIfOut | None = None
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


def _solve_household(request: dict[str, Any]) -> HouseholdOutcome:
    """Run one household proposal (in a worker): `trimtab.rebalance.propose_household`.

    `request` is JSON: household_id, snapshots, and optionally targets, context, drivers,
    withdrawals_usd, location_multipliers (decimal strings). The result carries the context
    exactly as the library used it (null when empty), like `_solve`.
    """
    snapshots = [AccountSnapshot.model_validate(s) for s in request["snapshots"]]
    try:
        from trimtab.rebalance import (
            InfeasibleProblem,
            RebalanceContext,
            RebalanceError,
            propose_household,
        )
        from trimtab.rebalance.household import household_weights
    except Exception as e:  # noqa: BLE001
        return HouseholdOutcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    try:
        context = RebalanceContext.from_json(request.get("context"))
    except (ValueError, KeyError, TypeError) as e:
        return HouseholdOutcome(failure=Failure("invalid_context", f"{type(e).__name__}: {e}"))
    drivers = {k: float(v) for k, v in (request.get("drivers") or {}).items()}
    try:
        household_weights(drivers)  # the library's own check of the names and values
    except ValueError as e:
        return HouseholdOutcome(failure=Failure("invalid_drivers", str(e)))
    targets = request.get("targets")
    withdrawals = request.get("withdrawals_usd")
    multipliers = request.get("location_multipliers")
    try:
        p = propose_household(
            snapshots, None if targets is None else {s: Decimal(w) for s, w in targets.items()},
            context=context, drivers=drivers or None,
            withdrawals_usd=None if withdrawals is None else {a: Decimal(w) for a, w in withdrawals.items()},
            location_multipliers=None if multipliers is None else {t: float(m) for t, m in multipliers.items()},
            explain=bool(request.get("explain")))
    except InfeasibleProblem as e:
        return HouseholdOutcome(failure=_household_failure("infeasible", e, e.constraint))
    except RebalanceError as e:
        return HouseholdOutcome(failure=_household_failure(_kind(e), e, None))
    except Exception as e:  # noqa: BLE001 - a bug in a solve must fail this what-if, not answer
        log.exception("propose_household failed unexpectedly for %s", request.get("household_id"))
        return HouseholdOutcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    empty = context == RebalanceContext()
    out = HouseholdWhatIfOut(
        proposal_id=p.proposal_id, household_id=request["household_id"],
        accounts=[HouseholdAccountOut(
            account_id=a.account_id, account_type=a.account_type, orders=list(a.orders),  # type: ignore[arg-type]
            est_tax_usd=a.est_tax_usd, est_cost_usd=a.est_cost_usd, tax_breakdown_usd=dict(a.tax),
            cost_breakdown_usd=dict(a.costs), pre_weights=dict(a.pre_weights),
            post_weights=dict(a.post_weights), cash_before_usd=a.cash_before_usd,
            cash_after_usd=a.cash_after_usd, location_drag_before_usd_per_year=a.location_drag_before_usd,
            location_drag_after_usd_per_year=a.location_drag_after_usd,
            snapshot_hash=p.snapshot_hashes[a.account_id]) for a in p.accounts],
        pre_weights=dict(p.pre_weights), post_weights=dict(p.post_weights),
        target_weights=dict(p.target_weights), est_tax_usd=p.est_tax_usd, est_cost_usd=p.est_cost_usd,
        location_drag_before_usd_per_year=p.location_drag_before_usd,
        location_drag_after_usd_per_year=p.location_drag_after_usd,
        objective=dict(p.objective),
        driver_weights={k: Decimal(repr(float(w))) for k, w in sorted(p.driver_weights.items())},
        dropped_orders=[DroppedOrder(account_id=a, symbol=s) for a, s in p.dropped],
        notes=list(p.notes), solver=p.solver, snapshot_hashes=dict(p.snapshot_hashes),
        context=None if empty else OptimizerContext.model_validate(context.to_json()),
        context_hash=p.context_hash, explanation=_household_why(p.explanation))
    return HouseholdOutcome(proposal=out)


def _household_why(e: Any) -> HouseholdExplanationOut | None:  # noqa: ANN401 - HouseholdExplanation
    if e is None:
        return None
    return HouseholdExplanationOut(
        drivers=list(e.drivers), null_drivers=list(e.null_drivers), resolves=e.resolves,
        coalitions=e.coalitions, efficiency_error_shares=Decimal(f"{e.efficiency_error_shares:.3e}"),
        elapsed_ms=Decimal(f"{e.elapsed_ms:.1f}"),
        trades=[HouseholdTradeWhy(
            account_id=t.account_id, symbol=t.symbol, trade_shares=Decimal(f"{t.trade_shares:.6f}"),
            trade_usd=usd(t.trade_usd), base_usd=usd(t.base_shares * t.price_usd),
            contributions_usd={d: usd(v) for d, v in t.contributions_usd.items()},
            reason=t.reason) for t in e.trades])


def _household_failure(kind: str, e: Exception, constraint: str | None) -> Failure:
    extra = dict(getattr(e, "extra", {}))
    accounts = extra.pop("account_ids", None) or extra.pop("accounts", None) or ()
    return Failure(kind, getattr(e, "detail", str(e)), constraint, _strs(extra),
                   tuple(str(a) for a in accounts))


#: The household shape compiled at warm-up: two accounts (a taxable account and an IRA) of up
#: to 8 securities, one lot per security: 0.13-0.21 s on this 2-core machine (0.25-1.5 s for a
#: second shape under load, so only one). Other shapes compile on first use (0.1-0.3 s each).
WARM_HOUSEHOLD_SHAPES = ((2, 8, 1),)


def _warm() -> bool:
    """Import the library and compile the common problem shapes in a worker (about 1 s), so
    the first proposal does not pay for them; then the commonest household shapes (cheap)."""
    from trimtab.rebalance import warm_up, warm_up_household
    from trimtab.rebalance.household import HouseholdShape

    warm_up()
    warm_up_household([HouseholdShape(*s) for s in WARM_HOUSEHOLD_SHAPES])
    return True


def _structured_solver() -> str | None:
    """In a worker: None when the structured solver is loaded, else why not."""
    from trimtab.rebalance import ipm

    return None if ipm.available() else (ipm.unavailable_reason() or "unavailable")


class Engine:
    """Runs proposals off the event loop; start() before use, stop() at shutdown."""

    def __init__(self, solver_processes: int = 0) -> None:
        self._workers = CpuWorkers(solver_processes, name="optimizer-solve")

    def start(self) -> None:
        self._workers.start()

    async def warm(self) -> None:
        """Load the solver stack in the workers so the first proposal is not paying for imports;
        then say whether the structured solver loaded there (gauge
        `trimtab_optimizer_structured_solver_available`)."""
        await self._workers.warm(_warm)
        try:
            why = await self._workers.run(_structured_solver)
        except Exception as e:  # noqa: BLE001 - a check, not a job: reported as unavailable
            why = f"could not be checked: {e}"
        opt_metrics.structured_solver["available"] = why is None
        if why is not None:
            log.warning("the structured solver is unavailable in the solver workers, Clarabel solves every "
                        "problem: %s", why)

    async def propose(self, snapshot: AccountSnapshot, *, proposal_id: uuid.UUID,
                      drift_id: uuid.UUID | None = None,
                      context: OptimizerContext | None = None) -> Outcome:
        try:
            return await self._workers.run(
                _solve, snapshot.model_dump(mode="json"), str(proposal_id),
                str(drift_id) if drift_id else None,
                context.model_dump(mode="json") if context is not None else None)
        except WorkerCrashed as e:  # a typed failure: the drift monitor re-arms the account
            return Outcome(failure=Failure("worker_crashed", str(e)))

    async def propose_household(self, household_id: str, snapshots: list[AccountSnapshot], *,
                                targets: dict[str, Decimal] | None = None,
                                context: OptimizerContext | None = None,
                                drivers: dict[str, Decimal] | None = None,
                                withdrawals_usd: dict[str, Decimal] | None = None,
                                location_multipliers: dict[str, Decimal] | None = None,
                                explain: bool = False) -> HouseholdOutcome:
        """Solve one household in a worker (nothing stored); a typed failure, never a raise."""

        def strs(d: dict[str, Decimal] | None) -> dict[str, str] | None:
            return None if d is None else {k: format(v, "f") for k, v in d.items()}

        request = {
            "household_id": household_id, "snapshots": [s.model_dump(mode="json") for s in snapshots],
            "targets": strs(targets), "drivers": strs(drivers), "withdrawals_usd": strs(withdrawals_usd),
            "location_multipliers": strs(location_multipliers), "explain": explain,
            "context": context.model_dump(mode="json") if context is not None else None,
        }
        try:
            return await self._workers.run(_solve_household, request)
        except WorkerCrashed as e:
            return HouseholdOutcome(failure=Failure("worker_crashed", str(e)))

    def stop(self) -> None:
        self._workers.stop()
