"""Replay of one recorded decision: re-run the optimizer and the explainer on the snapshot the
record holds and say whether their outputs are identical to what was recorded.

The record is the only input: the `RebalanceProposed` event carries the full account snapshot
(event-carried state), its hash, and the optimizer version that produced it. The replay checks
the snapshot against its recorded hash, re-solves with the same library, and compares the
rounded orders, the tax and cost estimates and the objective; then, if an explanation was
recorded, re-computes the Shapley attributions and compares them share for share. A version
difference is reported beside the verdict, since a different optimizer may rightly differ.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.canonical import canonical_hash
from trimtab.shared.errors import NotFound
from trimtab.shared.events import ExplanationCreated, RebalanceProposed

from .models import records


@dataclass
class ReplayReport:
    proposal_id: uuid.UUID
    proposal_seq: int
    explanation_seq: int | None
    snapshot_hash_ok: bool
    recorded_optimizer_version: str
    replay_optimizer_version: str
    proposal_identical: bool
    explanation_identical: bool | None
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.snapshot_hash_ok and self.proposal_identical and self.explanation_identical is not False


def _orders(orders: list[Any]) -> list[dict[str, Any]]:
    out = []
    for o in orders:
        d = o.model_dump(mode="json") if hasattr(o, "model_dump") else dict(o)
        d.pop("client_order_id", None)
        out.append(d)
    return sorted(out, key=lambda d: (d["symbol"], d["side"]))


def _diff(label: str, recorded: Any, replayed: Any, out: list[str]) -> bool:
    if json.dumps(recorded, sort_keys=True, default=str) == json.dumps(replayed, sort_keys=True, default=str):
        return True
    out.append(f"{label}: recorded {json.dumps(recorded, sort_keys=True, default=str)[:400]} "
               f"!= replayed {json.dumps(replayed, sort_keys=True, default=str)[:400]}")
    return False


def replay_payloads(proposed: RebalanceProposed, explained: ExplanationCreated | None) -> dict[str, Any]:
    """Pure CPU work (runs in a worker thread): re-solve and re-explain; the comparison parts.

    Both run with the context and driver weights the proposal records (an older proposal records
    neither: the snapshot alone under the default weights, as it was solved)."""
    from trimtab.rebalance import (
        OPTIMIZER_VERSION,
        RebalanceContext,
        explain,
        explanation_payload,
        propose,
    )
    from trimtab.rebalance.drivers import recorded_weights
    from trimtab.rebalance.errors import RebalanceError

    diffs: list[str] = []
    hash_ok = canonical_hash(proposed.snapshot) == proposed.snapshot_hash
    if not hash_ok:
        diffs.append("snapshot does not match its recorded hash")
    context = (RebalanceContext.from_json(proposed.context.model_dump(mode="json"))
               if proposed.context is not None else None)
    # Weights of an older formulation (no risk or esg driver) read as they behaved then.
    weights = (recorded_weights({k: float(v) for k, v in proposed.driver_weights.items()})
               if proposed.driver_weights is not None else None)
    try:
        again = propose(proposed.snapshot, proposal_id=proposed.proposal_id, context=context,
                        drivers=weights).to_event(drift_id=proposed.drift_id)
    except RebalanceError as e:  # the record no longer solves: that is the replay's answer
        diffs.append(f"the recorded snapshot does not solve now: {e}")
        return {"hash_ok": hash_ok, "proposal_identical": False,
                "explanation_identical": False if explained is not None else None,
                "differences": diffs, "replay_version": OPTIMIZER_VERSION}
    same = _diff("orders", _orders(proposed.orders), _orders(again.orders), diffs)
    same &= _diff("est_tax_usd", str(proposed.est_tax_usd), str(again.est_tax_usd), diffs)
    same &= _diff("est_cost_usd", str(proposed.est_cost_usd), str(again.est_cost_usd), diffs)
    same &= _diff("post_weights", {k: str(v) for k, v in proposed.post_weights.items()},
                  {k: str(v) for k, v in again.post_weights.items()}, diffs)
    expl_same: bool | None = None
    if explained is not None:
        # The explained drivers as recorded; a record made before the risk driver existed
        # (formulation 3) switched the factor term with drift.
        drivers = tuple(explained.drivers)
        follow = {"risk": "drift"} if "risk" not in drivers else None
        ex = explanation_payload(explain(proposed, context=context, driver_weights=weights,
                                         drivers=drivers, follow=follow),
                                 explanation_id=explained.explanation_id)
        expl_same = _diff("attributions", [t.model_dump(mode="json") for t in explained.trades],
                          [t.model_dump(mode="json") for t in ex.trades], diffs)
    return {"hash_ok": hash_ok, "proposal_identical": bool(same), "explanation_identical": expl_same,
            "differences": diffs, "replay_version": OPTIMIZER_VERSION}


async def _record(s: AsyncSession, tenant_id: str, proposal_id: uuid.UUID, event_type: str) -> Any:
    return (await s.execute(select(records.c.seq, records.c.envelope).where(
        records.c.tenant_id == tenant_id, records.c.proposal_id == proposal_id,
        records.c.event_type == event_type).order_by(records.c.seq).limit(1))).first()


async def replay(s: AsyncSession, tenant_id: str, proposal_id: uuid.UUID) -> ReplayReport:
    prop_row = await _record(s, tenant_id, proposal_id, "RebalanceProposed")
    if prop_row is None:
        raise NotFound(f"no recorded proposal {proposal_id}")
    expl_row = await _record(s, tenant_id, proposal_id, "ExplanationCreated")
    proposed = RebalanceProposed.model_validate(json.loads(bytes(prop_row.envelope))["payload"])
    explained = (ExplanationCreated.model_validate(json.loads(bytes(expl_row.envelope))["payload"])
                 if expl_row is not None else None)
    result = await asyncio.to_thread(replay_payloads, proposed, explained)
    return ReplayReport(
        proposal_id=proposal_id, proposal_seq=prop_row.seq,
        explanation_seq=expl_row.seq if expl_row is not None else None,
        snapshot_hash_ok=result["hash_ok"],
        recorded_optimizer_version=proposed.solver.optimizer_version,
        replay_optimizer_version=result["replay_version"],
        proposal_identical=result["proposal_identical"],
        explanation_identical=result["explanation_identical"],
        differences=result["differences"],
    )
