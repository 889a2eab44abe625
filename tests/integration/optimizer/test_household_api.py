"""`POST /v1/households/what-if` against real PostgreSQL and Kafka: the asset-location scenario
solved in the worker with its exact orders, the household's recent fills from the optimizer's
ledger merged into the context, nothing stored; 422s that name what is wrong; auth required."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.optimizer.household_snapshots import SIXTY_FORTY, bond_in_taxable, snap
from tests.support import auth, running, settings
from trimtab.optimizer import household
from trimtab.optimizer.app import Settings, create
from trimtab.optimizer.schemas import HouseholdWhatIfOut
from trimtab.shared.events import AccountSnapshot, Fill, HouseholdTrade

pytestmark = pytest.mark.integration
TENANT = "t-household"
URL = "/v1/households/what-if"
READ = ["proposals:read"]


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap))
    async with running(app) as client:
        yield app, client


@pytest.fixture
def client(service):
    return service[1]


def body(hh: str, *snapshots: AccountSnapshot, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"household_id": hh, "snapshots": [s.model_dump(mode="json") for s in snapshots],
            "targets": {s: format(w, "f") for s, w in SIXTY_FORTY.items()}, **extra}


def orders(out: HouseholdWhatIfOut, account_id: str) -> list[tuple[str, str, Decimal, list[tuple[str, Decimal]]]]:
    [acct] = [a for a in out.accounts if a.account_id == account_id]
    return [(o.symbol, o.side, o.shares, [(li.lot_id, li.shares) for li in o.lots]) for o in acct.orders]


async def test_the_bond_fund_moves_into_the_ira_and_nothing_is_stored(client):
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    taxable, ira = bond_in_taxable(hh, hh)
    r = await client.post(URL, headers=auth(TENANT, READ), json=body(hh, taxable, ira))
    assert r.status_code == 200, r.text
    wire = r.json()
    out = HouseholdWhatIfOut.model_validate(wire)
    assert out.household_id == hh
    assert orders(out, taxable.account_id) == [
        ("BND", "sell", Decimal(400), [(f"{hh}-taxable-BND-0", Decimal(400))]), ("VTI", "buy", Decimal(159), [])]
    assert orders(out, ira.account_id) == [
        ("BND", "buy", Decimal(397), []), ("VTI", "sell", Decimal(159), [(f"{hh}-ira-VTI-0", Decimal(159))])]
    by_id = {a.account_id: a for a in out.accounts}
    assert by_id[taxable.account_id].cash_after_usd == Decimal("234.05")
    assert by_id[ira.account_id].cash_after_usd == Decimal("34.11")
    assert (out.location_drag_before_usd_per_year, out.location_drag_after_usd_per_year) == (
        Decimal("666.00"), Decimal("119.25"))
    assert out.est_tax_usd == Decimal("0.00") and out.est_cost_usd == Decimal("31.84")
    assert out.target_weights == {"BND": Decimal("0.400000"), "VTI": Decimal("0.600000")}
    assert out.context is None and out.solver.status.startswith("optimal")
    assert set(out.snapshot_hashes) == {taxable.account_id, ira.account_id}
    # decimal strings on the wire, units in the names
    assert wire["accounts"][0]["orders"][0]["shares"] == "400"
    assert wire["location_drag_after_usd_per_year"] == "119.25" and wire["est_tax_usd"] == "0.00"
    for account in (taxable.account_id, ira.account_id):
        listed = await client.get("/v1/proposals", headers=auth(TENANT), params={"account_id": account})
        assert listed.status_code == 200 and listed.json() == []


async def test_explain_says_why_each_trade_with_location_among_the_drivers(client):
    """`explain: true`: exact Shapley values of every continuous trade over the drivers; the
    taxable account's bond sale is location's alone, each leg's contributions add up to it (to
    the cents they are rounded to), and the orders are those of the plain what-if."""
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    taxable, ira = bond_in_taxable(hh, hh)
    plain = await client.post(URL, headers=auth(TENANT, READ), json=body(hh, taxable, ira))
    assert plain.status_code == 200 and plain.json()["explanation"] is None
    r = await client.post(URL, headers=auth(TENANT, READ), json=body(hh, taxable, ira, explain=True))
    assert r.status_code == 200, r.text
    wire = r.json()
    out = HouseholdWhatIfOut.model_validate(wire)
    assert [a.orders for a in out.accounts] == [
        a.orders for a in HouseholdWhatIfOut.model_validate(plain.json()).accounts]
    e = out.explanation
    assert e is not None and e.method == "exact_shapley"
    assert e.drivers == ["drift", "cost", "cash", "location"] and e.resolves == 14
    [sell] = [t for t in e.trades if t.account_id == taxable.account_id and t.symbol == "BND"]
    assert sell.trade_usd == Decimal("-40000.00") and sell.contributions_usd["location"] == Decimal("-40000.00")
    assert sell.reason.endswith("(asset location): $40,000.00 toward it.")
    for t in e.trades:
        gap = abs(sum(t.contributions_usd.values()) + t.base_usd - t.trade_usd)
        assert gap <= Decimal("0.01") * len(t.contributions_usd), (t, gap)
    # dollars as decimal strings on the wire
    assert wire["explanation"]["trades"][0]["trade_usd"].count(".") == 1


async def test_the_households_recent_fills_join_the_context(service):
    """Fills in the optimizer's ledger: one of the IRA (recorded without a household), one of a
    third account recorded under the household; another household's and an old fill are left out."""
    app, client = service
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    taxable, ira = bond_in_taxable(hh, hh)
    third = snap(f"{hh}-roth", "tax_exempt", {}, household_id=hh, cash="10")
    stranger = snap(f"{hh}-stranger", "taxable", {}, household_id=f"{hh}-other", cash="10")

    def fill(n: int, symbol: str, day: str) -> Fill:
        return Fill(client_order_id=f"{hh}-{n}", symbol=symbol, side="buy", shares=Decimal(1),
                    price_usd=Decimal(250), executed_at=datetime.fromisoformat(f"{day}T15:00:00+00:00"))

    rt = app.state.runtime
    async with rt.uow() as uow:
        await household.record_fills(uow, TENANT, ira.account_id, f"ex-{hh}-1", [fill(1, "VTI", "2024-06-20")],
                                     snapshot=None, proposal_id=None)
        await household.record_fills(uow, TENANT, third.account_id, f"ex-{hh}-2", [fill(2, "BND", "2024-06-03")],
                                     snapshot=third, proposal_id=None)
        await household.record_fills(uow, TENANT, third.account_id, f"ex-{hh}-3", [fill(3, "VTI", "2024-05-01")],
                                     snapshot=third, proposal_id=None)  # before the 30-day window
        await household.record_fills(uow, TENANT, stranger.account_id, f"ex-{hh}-4",
                                     [fill(4, "VTI", "2024-06-21")], snapshot=stranger, proposal_id=None)
        await uow.commit()

    given = {"securities": {"VTI": {"wash_group": "us-total"}}}
    r = await client.post(URL, headers=auth(TENANT, READ), json=body(hh, taxable, ira, context=given))
    assert r.status_code == 200, r.text
    out = HouseholdWhatIfOut.model_validate(r.json())
    assert out.context is not None and out.context.securities["VTI"].wash_group == "us-total"
    assert out.context.recent_trades == [
        HouseholdTrade(account_id=third.account_id, symbol="BND", side="buy",
                       trade_date=datetime(2024, 6, 3, tzinfo=UTC).date()),
        HouseholdTrade(account_id=ira.account_id, symbol="VTI", side="buy",
                       trade_date=datetime(2024, 6, 20, tzinfo=UTC).date())]
    assert out.context_hash is not None
    # another tenant's ledger is not this tenant's
    r = await client.post(URL, headers=auth("t-household-2", READ), json=body(hh, taxable, ira))
    assert r.status_code == 200 and r.json()["context"] is None


async def test_refusals_are_422_problems_naming_what_is_wrong(client):
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    taxable, ira = bond_in_taxable(hh, hh)
    h = auth(TENANT, READ)

    other = ira.model_copy(update={"household_id": "hh-someone-else"})
    r = await client.post(URL, headers=h, json=body(hh, taxable, other))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["kind"] == "invalid_household" and r.json()["account_ids"] == [ira.account_id]

    r = await client.post(URL, headers=h, json=body(hh))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["loc"][-1] == "snapshots"

    many = [ira.model_copy(update={"account_id": f"{hh}-{i}"}) for i in range(21)]
    r = await client.post(URL, headers=h, json=body(hh, *many))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == "snapshots"

    r = await client.post(URL, headers=h, json=body(hh, taxable, taxable))
    assert r.status_code == 422 and r.json()["account_ids"] == [taxable.account_id]

    # an account with no household joins this one; its reserve cannot be raised: infeasible, named
    short = snap(f"{hh}-ira", "tax_deferred", {"VTI": [(240, 250.0, 800)]}, household_id=None, reserve="70000")
    r = await client.post(URL, headers=h, json=body(hh, taxable, short))
    assert r.status_code == 422, r.text
    p = r.json()
    assert (p["kind"], p["constraint"], p["account_ids"]) == ("infeasible", "cash_reserve", [short.account_id])

    r = await client.post(URL, headers=h, json=body(hh, taxable, ira, context={"withdrawal_usd": "100"}))
    assert r.status_code == 422 and "withdrawals_usd" in r.json()["detail"]
    r = await client.post(URL, headers=h, json=body(hh, taxable, ira, withdrawals_usd={"nobody": "1"}))
    assert r.status_code == 422 and r.json()["account_ids"] == ["nobody"]
    r = await client.post(URL, headers=h, json=body(hh, taxable, ira, drivers={"cash": "0"}))
    assert r.status_code == 422 and r.json()["kind"] == "invalid_drivers"
    r = await client.post(URL, headers=h, json=body(hh, taxable, ira, drivers={"charisma": "1"}))
    assert r.status_code == 422


async def test_the_read_scope_is_required(client):
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    payload = body(hh, *bond_in_taxable(hh, hh))
    assert (await client.post(URL, json=payload)).status_code == 401
    r = await client.post(URL, headers=auth(TENANT, ["proposals:decide"]), json=payload)
    assert r.status_code == 403 and "proposals:read" in r.json()["detail"]
