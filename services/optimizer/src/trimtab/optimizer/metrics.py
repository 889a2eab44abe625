"""The optimizer's own metrics (Prometheus through the shared OpenTelemetry setup).

Counted in the handler's process, around the work handed to the solver processes (a metric set
inside a worker process would never reach `/metrics`). Counts are taken when the handler does
the work; a transaction retried after an infrastructure failure counts again (rare; the alerts
use rates and ratios, not exact totals).
"""

from __future__ import annotations

from opentelemetry import metrics

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


def failure_label(kind: str, constraint: str | None) -> str:
    return f"{kind}:{constraint}" if constraint else kind
