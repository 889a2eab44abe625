"""The optimizer's own metrics (Prometheus through the shared OpenTelemetry setup).

Counted in the handler's process, around the work handed to the solver processes (a metric set
inside a worker process would never reach `/metrics`). Counts are taken when the handler does
the work; a transaction retried after an infrastructure failure counts again (rare; the alerts
use rates and ratios, not exact totals).
"""

from __future__ import annotations

import weakref
from datetime import datetime

from opentelemetry import metrics

from trimtab.shared.envelope import utcnow

meter = metrics.get_meter("trimtab.optimizer")
#: One per drift handled: outcome `proposed` or `failed`; `reason` the typed failure kind and the
#: violated constraint (`InfeasibleProblem:cash_reserve`), `none` for a proposal.
proposals = meter.create_counter("trimtab_optimizer_proposals", unit="{proposal}",
                                 description="drifts solved into a proposal or a typed failure")
#: Wall time of one account's solve as the handler sees it (queueing for a solver process
#: included), by outcome.
solve_duration = meter.create_histogram("trimtab_optimizer_solve_duration", unit="ms",
                                        description="time from handing a snapshot to the solver to its proposal")
#: Decisions taken: `decision` approved / rejected / overridden / expired, `automatic` true or false.
decisions = meter.create_counter("trimtab_optimizer_decisions", unit="{decision}",
                                 description="proposal decisions (advisor, policy or expiry)")

#: Orders of approvals the OMS reported it will never fill (rejected, canceled, expired).
unfilled_orders = meter.create_counter("trimtab_optimizer_unfilled_orders", unit="{order}",
                                       description="approved orders the OMS reported unfilled")
#: Fills of a proposal that had ended `unfilled`: orders declared dead traded after all.
fills_after_unfilled = meter.create_counter("trimtab_optimizer_fills_after_unfilled", unit="{fill}",
                                            description="fills of proposals that had ended unfilled")
#: Approvals ended by the sweep past their orders' time in force plus the grace, with neither
#: fills nor an OMS report: the OMS did not report on them (or the feed from it is down).
approvals_overdue = meter.create_counter("trimtab_optimizer_approvals_overdue", unit="{approval}",
                                         description="approvals ended past their time in force without an OMS report")


def failure_label(kind: str, constraint: str | None) -> str:
    return f"{kind}:{constraint}" if constraint else kind


class QueueStats:
    """The open proposals (awaiting risk, explanation or a decision) as the last refresh of the
    optimizer's sweep loop counted them: exported as `trimtab_optimizer_open_proposals` {tenant,
    state} and `trimtab_optimizer_oldest_open_proposal_age` {tenant, state} (seconds, measured at
    scrape time from the oldest one's creation). One per service instance; each replica reports the
    same database, so dashboards take `max` across instances, not `sum`."""

    def __init__(self, max_age_s: float) -> None:
        #: A count older than this is not exported (the sweep is failing: no figure rather than
        #: a stale one that keeps ageing).
        self.max_age_s = max_age_s
        self.rows: list[tuple[str, str, int, datetime]] = []
        #: (tenant, approvals whose orders are not all filled or reported unfilled, the oldest's
        #: decision time): `trimtab_optimizer_approvals_awaiting_execution` and the oldest's age.
        self.awaiting: list[tuple[str, int, datetime]] = []
        self.refreshed_at: datetime | None = None
        _live.add(self)

    def update(self, rows: list[tuple[str, str, int, datetime]],
               awaiting: list[tuple[str, int, datetime]] | None = None) -> None:
        self.rows, self.awaiting, self.refreshed_at = list(rows), list(awaiting or []), utcnow()

    def _fresh(self) -> bool:
        return self.refreshed_at is not None and (utcnow() - self.refreshed_at).total_seconds() <= self.max_age_s

    def current(self) -> list[tuple[str, str, int, datetime]]:
        return self.rows if self._fresh() else []

    def current_awaiting(self) -> list[tuple[str, int, datetime]]:
        return self.awaiting if self._fresh() else []

    def close(self) -> None:
        """Stop exporting (the service stopped)."""
        _live.discard(self)


_live: weakref.WeakSet[QueueStats] = weakref.WeakSet()


def _observe_open(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    return [metrics.Observation(n, {"tenant": tenant, "state": state})
            for q in list(_live) for tenant, state, n, _ in q.current()]


def _observe_oldest(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    now = utcnow()
    return [metrics.Observation(max(0.0, (now - oldest).total_seconds()), {"tenant": tenant, "state": state})
            for q in list(_live) for tenant, state, _, oldest in q.current()]


meter.create_observable_gauge("trimtab_optimizer_open_proposals", callbacks=[_observe_open], unit="{proposal}",
                              description="proposals not yet decided, by tenant and state (refreshed by the "
                                          "sweep loop, PROPOSAL_SWEEP_S)")
meter.create_observable_gauge("trimtab_optimizer_oldest_open_proposal_age", callbacks=[_observe_oldest], unit="s",
                              description="age of the oldest proposal not yet decided, by tenant and state")


def _observe_awaiting(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    return [metrics.Observation(n, {"tenant": tenant}) for q in list(_live) for tenant, n, _ in q.current_awaiting()]


def _observe_awaiting_oldest(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    now = utcnow()
    return [metrics.Observation(max(0.0, (now - oldest).total_seconds()), {"tenant": tenant})
            for q in list(_live) for tenant, _, oldest in q.current_awaiting()]


meter.create_observable_gauge("trimtab_optimizer_approvals_awaiting_execution", callbacks=[_observe_awaiting],
                              unit="{proposal}",
                              description="approved (or overridden) proposals whose orders the OMS has not all "
                                          "filled or reported unfilled, by tenant")
meter.create_observable_gauge("trimtab_optimizer_oldest_approval_awaiting_execution_age",
                              callbacks=[_observe_awaiting_oldest], unit="s",
                              description="time since the oldest such approval was decided, by tenant: the "
                                          "account takes no other approval meanwhile")


#: Whether the structured solver (trimtab/rebalance/ipm.py) loaded in the solver workers at start
#: (None until checked). Without it every problem goes to Clarabel: the same answers, ~1.5x fewer
#: accounts a second, explanations ~1.6x slower; nothing else shows it.
structured_solver: dict[str, bool | None] = {"available": None}


def _observe_structured(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    ok = structured_solver["available"]
    return [] if ok is None else [metrics.Observation(1 if ok else 0)]


meter.create_observable_gauge("trimtab_optimizer_structured_solver_available", callbacks=[_observe_structured],
                              unit="1", description="1 when the structured solver (rebalance/ipm.c) is built and "
                                                    "loaded in the solver workers, 0 when Clarabel solves everything")
