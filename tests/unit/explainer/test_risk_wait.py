"""The explainer's bounded wait for a proposal's risk assessment (`handlers.risk_for`): at most
the wait on this service's clock, whatever the producer's timestamp says."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from tests.unit.rebalance.conftest import drifted_account
from trimtab.explainer.handlers import risk_for
from trimtab.rebalance import propose
from trimtab.shared.envelope import Envelope


class _NoRows:
    def __init__(self) -> None:
        self.queries = 0

    async def execute(self, q):  # type: ignore[no-untyped-def]
        self.queries += 1
        return SimpleNamespace(first=lambda: None)


async def test_the_wait_is_bounded_on_this_services_clock() -> None:
    proposal = propose(drifted_account(4, seed=3), proposal_id=uuid.uuid4()).to_event()
    for skew, longest_s in ((timedelta(seconds=2), 0.6),    # a producer clock 2 s ahead
                            (timedelta(0), 0.6),            # fresh: waits the whole 0.3 s
                            (-timedelta(seconds=10), 0.1)):  # old (a backlog): no wait at all
        env = Envelope.new(proposal, producer="optimizer", tenant_id="t")
        env = env.model_copy(update={"occurred_at": datetime.now(UTC) + skew})
        session = _NoRows()
        t0 = time.monotonic()
        assert await risk_for(SimpleNamespace(session=session), env, proposal, 0.3) is None  # type: ignore[arg-type]
        took = time.monotonic() - t0
        assert took < longest_s, (skew, took)
        if skew >= timedelta(0):
            assert took >= 0.25 and session.queries > 1, skew  # it did wait and look again
