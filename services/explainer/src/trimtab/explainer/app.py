"""Composition root of the explainer: settings, explanation engine, handler, routes.

Run with `uvicorn --factory trimtab.explainer.app:create`. Nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from trimtab.shared.config import ServiceSettings
from trimtab.shared.http import create_app
from trimtab.shared.runtime import ServiceRuntime

from . import api, handlers
from .engine import ExplainEngine
from .models import SCHEMA, infra, metadata

log = logging.getLogger(__name__)
#: The consumer group (suffix) that keeps risk assessments for the narratives.
RISK_CONSUMER = "explainer-risk"


class Settings(ServiceSettings):
    service_name: str = Field(default="explainer", validation_alias="SERVICE_NAME")
    #: an explanation costs hundreds of solves: batching saves nothing and would hold every
    #: result of a run until the slowest is done.
    consumer_batch_size: int = Field(default=1, validation_alias="CONSUMER_BATCH_SIZE", ge=1)
    #: Worker processes for explanations; 0 = one worker thread in the service process.
    explainer_processes: int = Field(default=0, validation_alias="EXPLAINER_PROCESSES", ge=0)
    #: Counterfactuals (band, price, tax rate) for this many of the largest orders; 0 = none.
    #: Each order costs about 30 re-solves (bisection), hence a bound.
    explainer_counterfactual_orders: int = Field(default=8, validation_alias="EXPLAINER_COUNTERFACTUAL_ORDERS",
                                                 ge=0)
    #: How long after a proposal was published its explanation may wait for the proposal's risk
    #: assessment, whose figures the narratives quote (ms; 0: quote it only if already stored).
    explainer_risk_wait_ms: float = Field(default=2000.0, validation_alias="EXPLAINER_RISK_WAIT_MS", ge=0)
    #: Stored risk assessments are kept this long (hours), then purged: a narrative quotes its
    #: proposal's within seconds (a failed explanation retried later may go without figures).
    explainer_risk_retention_h: float = Field(default=168.0, validation_alias="EXPLAINER_RISK_RETENTION_H", gt=0)
    #: Seconds between purges of old risk assessments.
    explainer_risk_purge_s: float = Field(default=3600.0, validation_alias="EXPLAINER_RISK_PURGE_S", gt=0)


async def purge_once(runtime: ServiceRuntime, retention_h: float) -> int:
    """Purge the risk assessments older than `retention_h`, in transactions of 10,000 rows."""
    total = 0
    while True:
        async with runtime.uow() as uow:
            n = await handlers.purge_risk_assessments(uow, retention_h * 3600.0)
            await uow.commit()
        total += n
        if n < 10_000:
            break
    if total:
        log.info("purged %d risk assessments older than %g h", total, retention_h)
    return total


async def _purge_forever(runtime: ServiceRuntime, retention_h: float, every_s: float) -> None:
    while True:
        try:
            await purge_once(runtime, retention_h)
        except Exception:  # noqa: BLE001 - the next pass retries
            log.exception("purging old risk assessments failed")
        await asyncio.sleep(every_s)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra)
    engine = ExplainEngine(settings.explainer_processes,
                           counterfactual_orders=settings.explainer_counterfactual_orders)
    runtime.handle("RebalanceProposed")(partial(handlers.on_rebalance_proposed, engine=engine,
                                                risk_wait_s=settings.explainer_risk_wait_ms / 1000))
    # Risk assessments in a consumer group of their own: an explanation waiting for its
    # proposal's assessment must not wait on the consumer that would bring it.
    runtime.handle("RiskAssessed", consumer=RISK_CONSUMER)(handlers.on_risk_assessed)
    # n worker processes explain n proposals at once: n partitions handled concurrently (each
    # in order; the handler keeps nothing in memory across proposals).
    runtime.concurrent(max(1, settings.explainer_processes))
    warming: dict[str, asyncio.Task[None]] = {}

    @runtime.on_start
    async def _start() -> None:
        engine.start()
        # Warm in the background (shap's import and JIT take seconds): the service is ready at
        # once, and the first explanation simply queues behind the warm-up in the worker.
        warming["task"] = asyncio.create_task(engine.warm(), name="explainer:warm")
        warming["purge"] = asyncio.create_task(
            _purge_forever(runtime, settings.explainer_risk_retention_h, settings.explainer_risk_purge_s),
            name="explainer:purge-risk")

    @runtime.on_stop
    async def _stop() -> None:
        for task in (warming.pop("task", None), warming.pop("purge", None)):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        engine.stop()

    app = create_app(runtime, [api.router], title="Trimtab explainer",
                     description="Exact Shapley attribution of every rebalancing proposal to its "
                                 "drivers (drift, factor risk, cost, tax: harvesting losses and "
                                 "avoiding gains, cash, restrictions, ESG screen), with counterfactuals, charts and advisor "
                                 "and client narratives; consumes rebalance.proposed.v1 and risk.assessed.v1, publishes "
                                 "explanation.created.v1.")
    app.state.engine = engine
    return app
