"""Reference data against real PostgreSQL and Kafka: the `/v1/reference` API (upsert, read, 404,
422 leaving what is stored intact, scopes, tenants), the one query that reads it, and a
`DriftDetected` solved with it: the proposal records the factor model cut to its symbols and the
sigma/ADV, so its problem has factors and impact, and the audit's replay re-solves it exactly."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tests.integration.optimizer.snapshots import drifted
from tests.integration.optimizer.test_optimizer_service import (
    drift_env,
    events_of,
    send,
    wait_state,
)
from tests.support import auth
from trimtab.optimizer import reference
from trimtab.optimizer.proposals import proposal_id_for
from trimtab.rebalance import RebalanceContext
from trimtab.rebalance.inputs import from_snapshot
from trimtab.rebalance.solve import shape_of
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    DriftDetected,
    FactorModelContext,
    OptimizerContext,
    RebalanceProposed,
    SecurityContext,
)

pytestmark = pytest.mark.integration
SECURITIES = "/v1/reference/securities"
MODEL = "/v1/reference/risk-model"
READ, WRITE = ["market:read"], ["market:write", "market:read"]

#: The snapshot's four symbols plus two it does not hold, price or target (QQQ, IEF).
REFERENCE = [
    {"symbol": "VTI", "sigma_daily": "0.0120", "adv_usd": "5000000000", "substitute_group": "us-equity"},
    {"symbol": "VXUS", "sigma_daily": "0.0110", "adv_usd": "800000000"},
    {"symbol": "BND", "sigma_daily": "0.0030", "adv_usd": "300000000", "wash_group": "us-bonds",
     "tax_drag": "0.01665"},
    {"symbol": "VNQ", "sigma_daily": "0.0150", "adv_usd": "250000000"},
    {"symbol": "QQQ", "sigma_daily": "0.0150", "adv_usd": "9000000000"},
    {"symbol": "IEF", "sigma_daily": "0.0040"},
]
RISK_MODEL = {
    "name": "stat-60d", "symbols": ["QQQ", "VTI", "BND", "VXUS", "VNQ", "IEF"],
    # floats that only survive a round trip when every digit does
    "loadings": [[0.013, 0.001], [0.011, 0.30000000000000004], [0.001, 0.004], [0.010, -0.003],
                 [0.012, 0.005], [0.0, 0.004]],
    "specific_var": [2e-5, 1.2345678901234567e-05, 2e-6, 3e-5, 4e-5, 1e-6],
}


def tenant() -> str:
    return f"t-ref-{uuid.uuid4().hex[:8]}"


def problem(r) -> dict:  # type: ignore[no-untyped-def]
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json()


async def test_securities_are_upserted_read_and_replaced_whole(client):
    t = tenant()
    r = await client.put(SECURITIES, headers=auth(t, WRITE), json=REFERENCE)
    assert r.status_code == 200, r.text
    stored = r.json()
    assert [s["symbol"] for s in stored] == sorted(s["symbol"] for s in REFERENCE)
    bnd = next(s for s in stored if s["symbol"] == "BND")
    # decimal strings exactly as given (units in the names), nulls for what was not given
    assert bnd["sigma_daily"] == "0.0030" and bnd["adv_usd"] == "300000000"
    assert bnd["wash_group"] == "us-bonds" and bnd["tax_drag"] == "0.01665" and bnd["substitute_group"] is None
    assert bnd["updated_at"]

    listed = (await client.get(SECURITIES, headers=auth(t, READ))).json()
    assert listed == stored
    page = (await client.get(SECURITIES, headers=auth(t, READ), params={"after": "IEF", "limit": 2})).json()
    assert [s["symbol"] for s in page] == ["QQQ", "VNQ"]
    one = await client.get(f"{SECURITIES}/VTI", headers=auth(t, READ))
    assert one.status_code == 200 and one.json()["substitute_group"] == "us-equity"

    # a second PUT replaces the symbol's row whole and leaves the other symbols alone
    r = await client.put(SECURITIES, headers=auth(t, WRITE), json=[{"symbol": "VTI", "sigma_daily": "0.02"}])
    assert r.status_code == 200 and len(r.json()) == 1
    vti = (await client.get(f"{SECURITIES}/VTI", headers=auth(t, READ))).json()
    assert vti["sigma_daily"] == "0.02" and vti["adv_usd"] is None and vti["substitute_group"] is None
    assert vti["updated_at"] > one.json()["updated_at"]
    assert len((await client.get(SECURITIES, headers=auth(t, READ))).json()) == len(REFERENCE)

    # another tenant sees none of it
    other = tenant()
    assert (await client.get(SECURITIES, headers=auth(other, READ))).json() == []
    assert (await client.get(f"{SECURITIES}/VTI", headers=auth(other, READ))).status_code == 404


async def test_unknown_is_404_and_bad_input_is_422_storing_nothing(client):
    t = tenant()
    assert (await client.put(SECURITIES, headers=auth(t, WRITE), json=REFERENCE[:2])).status_code == 200
    before = (await client.get(SECURITIES, headers=auth(t, READ))).json()

    r = await client.get(f"{SECURITIES}/BND", headers=auth(t, READ))
    assert r.status_code == 404 and "BND" in problem(r)["detail"]

    bad_bodies = [
        # one bad row among good ones (a negative volatility): nothing of the batch is stored
        [{"symbol": "VTI", "sigma_daily": "0.5"}, {"symbol": "BND", "sigma_daily": "-0.01"}],
        [{"symbol": "VTI", "adv_usd": "0"}],
        # beyond what a solve accepts: stored, it made every proposal holding VTI fail (fuzzing)
        [{"symbol": "VTI", "sigma_daily": "1e300"}],
        [{"symbol": "VTI", "adv_usd": "1e16"}],
        [{"symbol": "VTI", "beta": "1.1"}],
        [{"symbol": "not a symbol"}],
        [],
        {"symbol": "VTI"},
    ]
    for body in bad_bodies:
        r = await client.put(SECURITIES, headers=auth(t, WRITE), json=body)
        assert r.status_code == 422, (body, r.text)
        problem(r)
    r = await client.put(SECURITIES, headers=auth(t, WRITE),
                         json=[{"symbol": "BND", "sigma_daily": "0.003"}, {"symbol": "BND"}])
    assert r.status_code == 422 and problem(r)["kind"] == "duplicate_symbols" and r.json()["symbols"] == ["BND"]
    assert (await client.get(SECURITIES, headers=auth(t, READ))).json() == before

    # scopes: reading needs market:read, writing market:write
    r = await client.put(SECURITIES, headers=auth(t, READ), json=REFERENCE[:1])
    assert r.status_code == 403 and problem(r)
    r = await client.get(SECURITIES, headers=auth(t, ["proposals:read"]))
    assert r.status_code == 403
    assert (await client.get(SECURITIES)).status_code == 401


async def test_the_risk_model_is_put_and_read_404_when_none_422_when_bad(client):
    t = tenant()
    r = await client.get(MODEL, headers=auth(t, READ))
    assert r.status_code == 404 and problem(r)
    r = await client.put(MODEL, headers=auth(t, WRITE), json=RISK_MODEL)
    assert r.status_code == 200, r.text
    got = (await client.get(MODEL, headers=auth(t, READ))).json()
    assert got["updated_at"] and {k: v for k, v in got.items() if k != "updated_at"} == RISK_MODEL

    bad_models = [
        {**RISK_MODEL, "specific_var": RISK_MODEL["specific_var"][:-1]},   # one variance short
        {**RISK_MODEL, "loadings": [[0.1]] + RISK_MODEL["loadings"][1:]},  # ragged loadings
        {**RISK_MODEL, "specific_var": [-1.0] + RISK_MODEL["specific_var"][1:]},
        {**RISK_MODEL, "symbols": ["VTI"] + RISK_MODEL["symbols"][1:]},    # VTI twice
        {**RISK_MODEL, "symbols": []},
        {**RISK_MODEL, "extra": 1},
    ]
    for body in bad_models:
        r = await client.put(MODEL, headers=auth(t, WRITE), json=body)
        assert r.status_code == 422, (body, r.text)
        problem(r)
    again = (await client.get(MODEL, headers=auth(t, READ))).json()
    assert again == got  # the stored model is untouched
    assert (await client.put(MODEL, headers=auth(t, READ), json=RISK_MODEL)).status_code == 403


async def test_one_query_reads_the_symbols_rows_and_the_models_rows_of_them(service):
    """One query per solve; the model's JSON is read once per version a process meets, and a new
    model is seen by the very next read (no TTL)."""
    app, client = service
    t = tenant()
    assert (await client.put(SECURITIES, headers=auth(t, WRITE), json=REFERENCE)).status_code == 200
    assert (await client.put(MODEL, headers=auth(t, WRITE), json=RISK_MODEL)).status_code == 200
    from sqlalchemy import event

    async def load(symbols: list[str], tenant_id: str = t) -> tuple[reference.Reference, int]:
        statements: list[str] = []

        def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            statements.append(statement)

        async with app.state.runtime.sessionmaker() as s:
            # This session's connection only: the running service's relay and consumers use the
            # same engine at the same time.
            sync_conn = (await s.connection()).sync_connection
            event.listen(sync_conn, "before_cursor_execute", count)
            try:
                ref = await reference.load_reference(s, tenant_id, symbols)
            finally:
                event.remove(sync_conn, "before_cursor_execute", count)
        return ref, len(statements)

    reference._MODELS.clear()
    ref, first = await load(["VNQ", "VTI", "BND", "XYZ"])
    again, then = await load(["VNQ", "VTI", "BND", "XYZ"])
    assert (first, then) == (2, 1) and again == ref  # the model's JSON once, then one query a solve
    assert set(ref.securities) == {"VNQ", "VTI", "BND"}
    assert ref.securities["BND"] == SecurityContext(sigma_daily=Decimal("0.0030"), adv_usd=Decimal("300000000"),
                                                    wash_group="us-bonds", tax_drag=Decimal("0.01665"))
    fm = ref.factor_model
    assert fm is not None and fm.name == "stat-60d" and fm.symbols == ["VTI", "BND", "VNQ"]
    # the stored floats, bit for bit
    assert fm.loadings == [RISK_MODEL["loadings"][i] for i in (1, 2, 4)]
    assert fm.specific_var == [RISK_MODEL["specific_var"][i] for i in (1, 2, 4)]

    # a new model is read at once (a new version), then kept
    newer = {**RISK_MODEL, "name": "stat-60d-v2", "specific_var": [v * 2 for v in RISK_MODEL["specific_var"]]}
    assert (await client.put(MODEL, headers=auth(t, WRITE), json=newer)).status_code == 200
    ref2, n2 = await load(["VTI"])
    assert n2 == 2 and ref2.factor_model is not None and ref2.factor_model.name == "stat-60d-v2"
    assert ref2.factor_model.specific_var == [2 * RISK_MODEL["specific_var"][1]]
    assert (await load(["VTI"]))[1] == 1

    assert await load(["VTI"], tenant()) == (reference.Reference(), 1)
    assert await load([]) == (reference.Reference(), 0)


async def test_a_drift_is_solved_with_the_reference_data_and_records_it(service, producer, kafka_bootstrap):
    """The drift brings a tax budget and its own entry for VXUS; the reference adds sigma/ADV
    and groups of the others and the model's rows of the snapshot's four symbols."""
    app, client = service
    t = tenant()
    assert (await client.put(SECURITIES, headers=auth(t, WRITE), json=REFERENCE)).status_code == 200
    assert (await client.put(MODEL, headers=auth(t, WRITE), json=RISK_MODEL)).status_code == 200
    account = drifted(f"acc-{t}")
    own_vxus = SecurityContext(wash_group="intl-equity")
    given = OptimizerContext(tax_budget_usd=Decimal("5000"), securities={"VXUS": own_vxus})
    base = drift_env(account, tenant=t)
    payload = base.parse(DriftDetected).model_copy(update={"context": given})
    await send(producer, Envelope.new(payload, producer="drift-monitor", tenant_id=t), account.account_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", proposal_id_for(t, payload.drift_id))
    p = proposed.parse(RebalanceProposed)

    ctx = p.context
    assert ctx is not None and ctx.tax_budget_usd == Decimal("5000")
    assert ctx.securities["VXUS"] == own_vxus  # the event's own entry wins
    assert set(ctx.securities) == {"VTI", "VXUS", "BND", "VNQ"}  # QQQ and IEF are not the snapshot's
    assert ctx.securities["VTI"].sigma_daily == Decimal("0.012") and ctx.securities["VTI"].adv_usd == Decimal("5E+9")
    assert ctx.securities["BND"].wash_group == "us-bonds"
    fm = ctx.factor_model
    assert fm is not None and fm.name == "stat-60d" and fm.symbols == ["VTI", "BND", "VXUS", "VNQ"]
    assert fm.loadings[0] == [0.011, 0.30000000000000004] and fm.specific_var[0] == 1.2345678901234567e-05
    # what the proposal records makes the solve's problem: factors and the impact term
    used = RebalanceContext.from_json(ctx.model_dump(mode="json"))
    shape = shape_of(from_snapshot(p.snapshot, used))
    assert shape.n_factors >= 2 and shape.impact
    assert p.cost_breakdown is not None and p.cost_breakdown["impact_usd"] > 0
    assert Decimal(p.objective["risk"]) > 0
    stored = await wait_state(client, p.proposal_id, "proposed", tenant=t)
    assert stored["context"] == ctx.model_dump(mode="json")

    # The audit's replay re-solves from the record alone: the same orders, tax, cost, weights.
    from trimtab.audit.replay import replay_payloads

    replayed = replay_payloads(p, None)
    assert replayed["hash_ok"] and replayed["proposal_identical"], replayed["differences"]

    # what-if solves with the same reference data (and so gives the drift's orders)
    r = await client.post("/v1/rebalance/what-if", headers=auth(t, ["proposals:read"]),
                          json={"snapshot": account.model_dump(mode="json"), "context": given.model_dump(mode="json")})
    assert r.status_code == 200, r.text
    what_if = RebalanceProposed.model_validate(r.json())
    assert what_if.context == ctx and what_if.orders == p.orders

    # Without reference data (another tenant), the same drift solves with its own context only.
    bare_tenant = tenant()
    bare = drift_env(account, tenant=bare_tenant)
    bare_payload = bare.parse(DriftDetected).model_copy(update={"context": given})
    await send(producer, Envelope.new(bare_payload, producer="drift-monitor", tenant_id=bare_tenant),
               account.account_id)
    [plain_env] = await events_of(kafka_bootstrap, "rebalance.proposed.v1",
                                  proposal_id_for(bare_tenant, bare_payload.drift_id))
    plain = plain_env.parse(RebalanceProposed)
    assert plain.context is not None and plain.context.factor_model is None
    assert set(plain.context.securities) == {"VXUS"}
    assert plain.cost_breakdown is not None and plain.cost_breakdown["impact_usd"] == 0
    assert not shape_of(from_snapshot(plain.snapshot, RebalanceContext.from_json(
        plain.context.model_dump(mode="json")))).impact


async def test_a_household_what_if_gets_the_reference_data_of_every_account(client):
    from tests.integration.optimizer.household_snapshots import SIXTY_FORTY, bond_in_taxable

    t = tenant()
    assert (await client.put(SECURITIES, headers=auth(t, WRITE), json=REFERENCE)).status_code == 200
    model = FactorModelContext(name="hh", symbols=["BND", "VTI", "QQQ"],
                               loadings=[[0.001], [0.011], [0.013]], specific_var=[2e-6, 1e-5, 2e-5])
    assert (await client.put(MODEL, headers=auth(t, WRITE), json=model.model_dump(mode="json"))).status_code == 200
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    taxable, ira = bond_in_taxable(hh, hh)
    body = {"household_id": hh, "snapshots": [taxable.model_dump(mode="json"), ira.model_dump(mode="json")],
            "targets": {s: format(w, "f") for s, w in SIXTY_FORTY.items()}}
    r = await client.post("/v1/households/what-if", headers=auth(t, ["proposals:read"]), json=body)
    assert r.status_code == 200, r.text
    ctx = OptimizerContext.model_validate(r.json()["context"])
    assert set(ctx.securities) == {"BND", "VTI"} and ctx.securities["BND"].tax_drag == Decimal("0.01665")
    assert ctx.factor_model is not None and ctx.factor_model.symbols == ["BND", "VTI"]
