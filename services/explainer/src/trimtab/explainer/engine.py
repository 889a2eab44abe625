"""Where explanations run: off the event loop, in a worker thread or worker processes.

An explanation re-solves the proposal 2^K times (K = 6 drivers), plus the bisections of its
counterfactuals (about 10 solves per order and parameter): CPU work that must not block the
event loop. `explainer_processes = 0` (default) runs them in one worker thread;
`n > 0` in n worker processes (parallel explanations; the GIL stops threads from solving in
parallel). Each worker compiles its problems and JITs shap on first use; `warm()` pays that
(about 10 s, mostly shap) at start-up instead of on the first proposal.

The worker returns a plain `Outcome` and never raises: a failed explanation is a result the
service records, not a crash.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from trimtab.shared.events import ExplanationCreated, RebalanceProposed, RiskAssessed
from trimtab.shared.workers import CpuWorkers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    kind: str
    detail: str


@dataclass(frozen=True)
class Outcome:
    payload: ExplanationCreated | None = None
    #: per symbol: price and contributions in dollars; and timing
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float | None = None
    failure: Failure | None = None


def _kind(e: Exception) -> str:
    name = type(e).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def recorded_problem(proposal: RebalanceProposed) -> tuple[Any, dict[str, float] | None]:
    """(RebalanceContext or None, driver weights as floats or None) recorded on the proposal."""
    from trimtab.rebalance import RebalanceContext
    from trimtab.rebalance.drivers import recorded_weights

    context = (RebalanceContext.from_json(proposal.context.model_dump(mode="json"))
               if proposal.context is not None else None)
    # Weights of an older formulation (no risk or esg driver) read as they behaved then.
    weights = (recorded_weights({k: float(v) for k, v in proposal.driver_weights.items()})
               if proposal.driver_weights is not None else None)
    return context, weights


def explain_proposal(proposal_json: dict[str, Any], explanation_id: str, *,
                     counterfactual_orders: int = 0, risk_json: dict[str, Any] | None = None) -> Outcome:
    """Explain one proposal (in a worker); the only code that calls the rebalancing library.

    Six drivers (tax split into harvesting losses and avoiding gains); counterfactuals for the
    `counterfactual_orders` largest orders (0: none). `risk_json`: the proposal's `RiskAssessed`,
    whose figures the narratives then quote.
    """
    proposal = RebalanceProposed.model_validate(proposal_json)
    risk = RiskAssessed.model_validate(risk_json) if risk_json is not None else None
    try:
        from trimtab.rebalance import RebalanceError, explain, explanation_payload
        from trimtab.rebalance.explain import EXPLAIN_DRIVERS, explanation_details
    except Exception as e:  # noqa: BLE001 - a library that cannot load fails this one explanation
        return Outcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    try:
        # The problem the optimizer solved: its recorded context and driver weights (older
        # proposals record neither: the snapshot alone, under the default weights).
        context, weights = recorded_problem(proposal)
    except (ValueError, KeyError, TypeError) as e:
        return Outcome(failure=Failure("invalid_context", f"{type(e).__name__}: {e}"))
    try:
        ex = explain(proposal, drivers=EXPLAIN_DRIVERS, counterfactuals=counterfactual_orders > 0,
                     max_counterfactual_orders=counterfactual_orders, prune=True,
                     context=context, driver_weights=weights, risk=risk)
        payload = explanation_payload(ex, explanation_id=uuid.UUID(explanation_id))
    except RebalanceError as e:
        return Outcome(failure=Failure(_kind(e), e.detail))
    except Exception as e:  # noqa: BLE001 - a bug must fail this explanation, not the consumer
        log.exception("explaining proposal %s failed unexpectedly", proposal.proposal_id)
        return Outcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    return Outcome(payload=payload, details=explanation_details(ex), elapsed_ms=ex.elapsed_ms)


def _warm() -> bool:
    from trimtab.rebalance import warm_up, warm_up_explainer

    warm_up()
    warm_up_explainer()
    return True


class ExplainEngine:
    """Runs explanations off the event loop; start() before use, stop() at shutdown."""

    def __init__(self, processes: int = 0, *, counterfactual_orders: int = 0) -> None:
        self._workers = CpuWorkers(processes, name="explainer")
        self._counterfactual_orders = counterfactual_orders

    def start(self) -> None:
        self._workers.start()

    async def warm(self) -> None:
        await self._workers.warm(_warm)

    async def explain(self, proposal: RebalanceProposed, *, explanation_id: uuid.UUID,
                      risk: dict[str, Any] | None = None) -> Outcome:
        """`risk`: the proposal's `RiskAssessed` (JSON), if known."""
        return await self._workers.run(partial(
            explain_proposal, proposal.model_dump(mode="json"), str(explanation_id),
            counterfactual_orders=self._counterfactual_orders, risk_json=risk))

    def stop(self) -> None:
        self._workers.stop()
