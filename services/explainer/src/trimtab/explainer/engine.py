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

import asyncio
import logging
import multiprocessing
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from trimtab.shared.events import ExplanationCreated, RebalanceProposed

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


def explain_proposal(proposal_json: dict[str, Any], explanation_id: str, *,
                     counterfactual_orders: int = 0) -> Outcome:
    """Explain one proposal (in a worker); the only code that calls the rebalancing library.

    Six drivers (tax split into harvesting losses and avoiding gains); counterfactuals for the
    `counterfactual_orders` largest orders (0: none).
    """
    proposal = RebalanceProposed.model_validate(proposal_json)
    try:
        from trimtab.rebalance import RebalanceError, explain, explanation_payload
        from trimtab.rebalance.explain import EXPLAIN_DRIVERS, explanation_details
    except Exception as e:  # noqa: BLE001 - a library that cannot load fails this one explanation
        return Outcome(failure=Failure("internal_error", f"{type(e).__name__}: {e}"))
    try:
        ex = explain(proposal, drivers=EXPLAIN_DRIVERS, counterfactuals=counterfactual_orders > 0,
                     max_counterfactual_orders=counterfactual_orders, prune=True)
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
        self._processes = processes
        self._counterfactual_orders = counterfactual_orders
        self._executor: Executor | None = None

    def start(self) -> None:
        if self._processes > 0:
            # spawn: a forked child of a process running an event loop and Kafka clients would
            # inherit their sockets and locks.
            self._executor = ProcessPoolExecutor(
                self._processes, mp_context=multiprocessing.get_context("spawn"))
        else:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="explainer")

    async def warm(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(*(loop.run_in_executor(self._require(), _warm)
                                   for _ in range(max(1, self._processes))))
        except Exception:  # noqa: BLE001 - warming is an optimization; an explanation reports errors
            log.warning("could not warm the explainer", exc_info=True)

    async def explain(self, proposal: RebalanceProposed, *, explanation_id: uuid.UUID) -> Outcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._require(), partial(
            explain_proposal, proposal.model_dump(mode="json"), str(explanation_id),
            counterfactual_orders=self._counterfactual_orders))

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _require(self) -> Executor:
        if self._executor is None:
            raise RuntimeError("engine not started")
        return self._executor
