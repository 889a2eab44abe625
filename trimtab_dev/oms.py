"""A simulated order-management system for the demo and the tests: consumes
`trades.approved.v1`, fills every order at its estimated price, and reports the fills on
`trades.executed.v1`, the way a real OMS integrates with Trimtab. With `reject_every=n` it refuses
every n-th approval instead (and with `reject_accounts` every approval of those accounts), and
reports its orders on `trades.unfilled.v1` (`OrdersUnfilled`, status `rejected`), as a broker
refusing an account's orders would.

It is labelled a simulation wherever its output is shown. Like a real OMS it is idempotent by
`client_order_id`: a redelivered approval is not filled twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    Fill,
    Order,
    OrdersUnfilled,
    TradesApproved,
    TradesExecuted,
    UnfilledOrder,
)
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

log = logging.getLogger(__name__)


class OmsSimulator:
    def __init__(self, bootstrap: str, group_id: str = "oms-simulator", *, reject_every: int = 0,
                 reject_accounts: frozenset[str] = frozenset()) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.reject_every = reject_every
        self.reject_accounts = reject_accounts
        self.filled_orders: set[str] = set()
        self.executions = 0
        self.approvals = 0
        self.rejections = 0
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._producer = await start_producer(self.bootstrap, "oms-simulator")
        self._consumer = AIOKafkaConsumer(
            "trades.approved.v1", bootstrap_servers=self.bootstrap, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
        await self._producer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            if self._consumer.assignment():
                self.ready.set()
            for tp, recs in batch.items():
                for rec in recs:
                    env = Envelope.from_bytes(rec.value)
                    await self._fill(env)
                await self._consumer.commit({tp: recs[-1].offset + 1})

    async def _fill(self, env: Envelope) -> None:
        approved = env.parse(TradesApproved)
        todo = [o for o in approved.orders if (o.client_order_id or "") not in self.filled_orders]
        if not todo:
            return
        self.approvals += 1
        if approved.account_id in self.reject_accounts or (
                self.reject_every and self.approvals % self.reject_every == 0):
            await self._reject(env, approved, todo)
            return
        # A simulation fills at the estimated price, at the market time the orders were priced at
        # (during a historical replay that is the replayed day, not today's wall clock).
        executed_at = approved.priced_as_of or datetime.now(UTC)
        fills = [
            Fill(client_order_id=o.client_order_id or f"{approved.proposal_id}/{o.symbol}/{o.side}",
                 symbol=o.symbol, side=o.side, shares=o.shares, price_usd=o.est_price_usd,
                 executed_at=executed_at, lots=o.lots)
            for o in todo
        ]
        executed = TradesExecuted(execution_id=f"sim-{approved.proposal_id}", proposal_id=approved.proposal_id,
                                  account_id=approved.account_id, fills=fills)
        out = env.caused(executed, producer="oms-simulator")
        await (await self._producer.send(
            "trades.executed.v1", value=out.to_bytes(), key=approved.account_id.encode(),
            headers=encode_headers(kafka_headers(out)),
        ))
        self.filled_orders.update(f.client_order_id for f in fills)
        self.executions += 1

    async def _reject(self, env: Envelope, approved: TradesApproved, todo: list[Order]) -> None:
        report = OrdersUnfilled(
            report_id=f"sim-reject-{approved.proposal_id}", proposal_id=approved.proposal_id,
            account_id=approved.account_id, reported_at=approved.priced_as_of or datetime.now(UTC),
            orders=[UnfilledOrder(client_order_id=o.client_order_id or f"{approved.proposal_id}/{o.symbol}/{o.side}",
                                  symbol=o.symbol, side=o.side, unfilled_shares=o.shares, status="rejected",
                                  reason="SIMULATED: the broker refused the account's orders")
                    for o in todo])
        out = env.caused(report, producer="oms-simulator")
        await (await self._producer.send(
            "trades.unfilled.v1", value=out.to_bytes(), key=approved.account_id.encode(),
            headers=encode_headers(kafka_headers(out)),
        ))
        self.filled_orders.update(o.client_order_id or "" for o in todo)
        self.rejections += 1
