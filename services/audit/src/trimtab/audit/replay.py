"""Replay of one recorded decision: re-run the optimizer and the explainer on the snapshot the
record holds and say whether their outputs are identical to what was recorded.

The record is the only input: the `RebalanceProposed` event carries the full account snapshot
(event-carried state), its hash, the context and driver weights it was solved with, and the
optimizer version that produced it. The replay checks the snapshot against its recorded hash,
re-solves with the same library, and compares the **whole** replayed `RebalanceProposed` payload
with the recorded one, field by field; then, if an explanation was recorded, re-explains and
compares the whole `ExplanationCreated` payload, narratives included. Every field that differs is
named in `differences`. A version difference is reported beside the verdict, since a different
optimizer may rightly differ (and the version fields themselves then differ too). Narratives that
quote a risk assessment (`risk_event_id`) are re-written with that recorded `RiskAssessed`; one
missing from the record, or of another proposal, makes the explanation differ.

What is not compared, and why (nothing else is left out):

* `PROPOSAL_INPUTS` / `EXPLANATION_INPUTS`: what the replay is *given* from the record (the ids,
  the snapshot, the context and driver weights it solves with, the explanation's id). They are
  the question, not the answer; a forged input shows up as outputs that no longer follow from it
  (and a forged snapshot as a snapshot hash that does not match).
* `PROPOSAL_RUN_DEPENDENT`: what legitimately differs between two honest runs on the same input:
  the solve's wall-clock time, and the OMS idempotency key (set on `trades.approved.v1`, never by
  the optimizer). The `ExplanationCreated` event carries no timing field, so nothing of it is.

An explanation's narratives depend on how the explainer was called, which the event does not
record: the explainer service splits tax into its two motives, prunes, and adds counterfactuals
for its `EXPLAINER_COUNTERFACTUAL_ORDERS` largest orders; the library's plain `explain(proposal)`
does neither. The replay re-explains the way each known producer does (`_explain_calls`) and the
explanation is identical when one of them reproduces every compared field; otherwise the
differences of the closest one are reported. The number of counterfactual orders is read from the
recorded narrative (every order given counterfactuals gets one "Would not trade if" line, since
the band always yields one); a wrong count only makes the narratives differ, so the replay never
accepts a text it did not write itself. The drivers explained are today's, in today's order, when
the record names today's set (a reordered list is a difference); an older formulation's set is
replayed as recorded.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.canonical import canonical_hash
from trimtab.shared.errors import NotFound
from trimtab.shared.events import ExplanationCreated, RebalanceProposed, RiskAssessed

from .models import records

#: `RebalanceProposed` fields copied from the record into the replay (its inputs).
PROPOSAL_INPUTS: tuple[str, ...] = ("proposal_id", "drift_id", "snapshot", "context", "driver_weights")
#: `RebalanceProposed` fields two honest runs on the same input may differ in (`[]`: every element).
PROPOSAL_RUN_DEPENDENT: tuple[str, ...] = ("solver.solve_ms", "orders[].client_order_id")
#: `ExplanationCreated` fields copied from the record into the replay (its inputs).
EXPLANATION_INPUTS: tuple[str, ...] = ("explanation_id", "risk_event_id")
#: `ExplanationCreated` fields two honest runs may differ in: none (it carries no timing).
EXPLANATION_RUN_DEPENDENT: tuple[str, ...] = ()

#: The advisor narrative's line for an order given counterfactuals (`rebalance/narrative.py`).
_COUNTERFACTUAL_LINE = "\n  Would not trade if: "
_SHOWN = 400


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


def _drop(d: Any, path: str) -> None:
    """Remove `path` ("a.b", "a[].b") from the JSON value `d`, in place."""
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        for item in (d.get(head[:-2]) or []) if isinstance(d, dict) else []:
            if rest:
                _drop(item, rest)
        return
    if not isinstance(d, dict):
        return
    if rest:
        if head in d:
            _drop(d[head], rest)
    else:
        d.pop(head, None)


def comparable(payload: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    """The payload as JSON values, without the fields in `skip`."""
    d = payload.model_dump(mode="json")
    for path in skip:
        _drop(d, path)
    return d


def _text(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _shown(recorded: Any, replayed: Any) -> tuple[str, str]:
    """The part of two different values worth printing: the differing keys of two dicts, the
    differing positions of two lists of one length, the text around the first difference."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        keys = sorted(k for k in recorded.keys() | replayed.keys()
                      if _text(recorded.get(k, "<absent>")) != _text(replayed.get(k, "<absent>")))
        return (_text({k: recorded.get(k, "<absent>") for k in keys}),
                _text({k: replayed.get(k, "<absent>") for k in keys}))
    if isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(replayed):
        at = [i for i, (a, b) in enumerate(zip(recorded, replayed, strict=True)) if _text(a) != _text(b)]
        return (_text({f"[{i}]": recorded[i] for i in at}), _text({f"[{i}]": replayed[i] for i in at}))
    if isinstance(recorded, str) and isinstance(replayed, str):
        i = next((i for i, (a, b) in enumerate(zip(recorded, replayed, strict=False)) if a != b),
                 min(len(recorded), len(replayed)))
        lo = max(0, i - 60)
        return (f"…{recorded[lo:lo + _SHOWN]!r} (at character {i})", f"…{replayed[lo:lo + _SHOWN]!r}")
    return _text(recorded), _text(replayed)


def compare(prefix: str, recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """One line per top-level field whose value differs: `<prefix><field>: recorded … != replayed …`."""
    out = []
    for k in sorted(recorded.keys() | replayed.keys()):
        a, b = recorded.get(k, "<absent>"), replayed.get(k, "<absent>")
        if _text(a) != _text(b):
            ra, rb = _shown(a, b)
            out.append(f"{prefix}{k}: recorded {ra[:_SHOWN]} != replayed {rb[:_SHOWN]}")
    return out


def _explain_calls(explained: ExplanationCreated) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ways a recorded explanation may have been made, most likely first: the explainer
    service's, then the library's plain `explain(proposal)`."""
    from trimtab.rebalance.drivers import DRIVERS
    from trimtab.rebalance.explain import EXPLAIN_DRIVERS

    recorded = tuple(explained.drivers)
    if set(recorded) == set(DRIVERS):  # today's players, in the order the explainer lists them
        drivers, split, follow = DRIVERS, EXPLAIN_DRIVERS, None
    else:  # an older formulation's players, as recorded
        drivers = recorded
        split = tuple(x for d in drivers for x in (("tax_losses", "tax_gains") if d == "tax" else (d,)))
        # A record made before the risk driver existed (formulation 3) switched the factor term with drift.
        follow = {"risk": "drift"} if "risk" not in drivers else None
    n = explained.narrative_advisor.count(_COUNTERFACTUAL_LINE)
    yield "explainer service", {"drivers": split, "prune": True, "follow": follow, "counterfactuals": n > 0,
                                "max_counterfactual_orders": n or None}
    yield "plain explain", {"drivers": drivers, "follow": follow}


def replay_payloads(proposed: RebalanceProposed, explained: ExplanationCreated | None,
                    risk: RiskAssessed | None = None) -> dict[str, Any]:
    """Pure CPU work (runs in a worker thread): re-solve and re-explain; the comparison parts.

    Both run with the context and driver weights the proposal records (an older proposal records
    neither: the snapshot alone under the default weights, as it was solved). `risk`: the
    recorded assessment the explanation's narratives quote (`risk_event_id`), passed back in."""
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
    try:
        context = (RebalanceContext.from_json(proposed.context.model_dump(mode="json"))
                   if proposed.context is not None else None)
        # Weights of an older formulation (no risk or esg driver) read as they behaved then.
        weights = (recorded_weights({k: float(v) for k, v in proposed.driver_weights.items()})
                   if proposed.driver_weights is not None else None)
        again = propose(proposed.snapshot, proposal_id=proposed.proposal_id, context=context,
                        drivers=weights).to_event(drift_id=proposed.drift_id)
    except (RebalanceError, ValueError, KeyError, TypeError) as e:
        # The record no longer solves (or names a context or weights that cannot be read): that
        # is the replay's answer.
        diffs.append(f"the recorded snapshot does not solve now: {e}")
        return {"hash_ok": hash_ok, "proposal_identical": False,
                "explanation_identical": False if explained is not None else None,
                "differences": diffs, "replay_version": OPTIMIZER_VERSION}
    # The replay's inputs are the record's (see PROPOSAL_INPUTS); everything else is its output.
    again = again.model_copy(update={k: getattr(proposed, k) for k in PROPOSAL_INPUTS})
    if proposed.solver.blas_core is None:
        # Made before the kernel was recorded: nothing to compare it with (the outputs still are).
        again = again.model_copy(update={"solver": again.solver.model_copy(update={"blas_core": None})})
    skip = PROPOSAL_RUN_DEPENDENT
    found = compare("", comparable(proposed, skip), comparable(again, skip))
    diffs += found
    expl_same: bool | None = None
    if explained is not None:
        skip = EXPLANATION_INPUTS + EXPLANATION_RUN_DEPENDENT
        recorded = comparable(explained, skip)
        best: list[str] | None = None
        for how, call in _explain_calls(explained):
            try:
                ex = explanation_payload(explain(proposed, context=context, driver_weights=weights,
                                                 risk=risk, **call),
                                         explanation_id=explained.explanation_id)
            except (RebalanceError, ValueError) as e:  # e.g. drivers this library does not know
                got = [f"explanation ({how}): the recorded proposal does not explain now: {e}"]
            else:
                got = compare("explanation.", recorded, comparable(ex, skip))
            if best is None or len(got) < len(best):
                best = got
            if not got:
                break
        assert best is not None
        expl_same = not best
        diffs += best
    return {"hash_ok": hash_ok, "proposal_identical": not found, "explanation_identical": expl_same,
            "differences": diffs, "replay_version": OPTIMIZER_VERSION}


async def _record(s: AsyncSession, tenant_id: str, proposal_id: uuid.UUID, event_type: str) -> Any:
    """The first well-formed record of `event_type` about the proposal: a foreign producer's
    message (`foreign:<topic>`) or one whose payload did not validate names the proposal but is
    not what the optimizer or the explainer published, so a replay never compares against it."""
    return (await s.execute(select(records.c.seq, records.c.envelope).where(
        records.c.tenant_id == tenant_id, records.c.proposal_id == proposal_id,
        records.c.event_type == event_type, records.c.payload_valid.is_(True),
        ~records.c.topic.like("foreign:%")).order_by(records.c.seq).limit(1))).first()


async def replay(s: AsyncSession, tenant_id: str, proposal_id: uuid.UUID) -> ReplayReport:
    prop_row = await _record(s, tenant_id, proposal_id, "RebalanceProposed")
    if prop_row is None:
        raise NotFound(f"no recorded proposal {proposal_id}")
    expl_row = await _record(s, tenant_id, proposal_id, "ExplanationCreated")
    proposed = RebalanceProposed.model_validate(json.loads(bytes(prop_row.envelope))["payload"])
    explained = (ExplanationCreated.model_validate(json.loads(bytes(expl_row.envelope))["payload"])
                 if expl_row is not None else None)
    risk, risk_problem = None, None
    if explained is not None and explained.risk_event_id is not None:
        row = (await s.execute(select(records.c.envelope).where(
            records.c.tenant_id == tenant_id, records.c.event_id == explained.risk_event_id,
            records.c.event_type == "RiskAssessed"))).first()
        if row is None:
            risk_problem = (f"explanation.risk_event_id: the narratives quote risk assessment "
                            f"{explained.risk_event_id}, which is not in the record")
        else:
            risk = RiskAssessed.model_validate(json.loads(bytes(row.envelope))["payload"])
            if risk.proposal_id != proposal_id:
                risk_problem = (f"explanation.risk_event_id: risk assessment {explained.risk_event_id} "
                                f"is of proposal {risk.proposal_id}, not {proposal_id}")
    result = await asyncio.to_thread(replay_payloads, proposed, explained, risk)
    if risk_problem is not None:
        result["explanation_identical"] = False
        result["differences"] = [*result["differences"], risk_problem]
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
