"""The what-if routes refuse numbers no account has (found by fuzzing: each was a 500, the solver
failing on 1e400 dollars or a price of 1e-300, or date arithmetic overflowing) with a 422 problem
that says what is wrong, and still answer a sound request."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.integration.optimizer.household_snapshots import bond_in_taxable
from tests.integration.optimizer.snapshots import drifted
from tests.support import auth, running, settings
from trimtab.optimizer.app import Settings, create

pytestmark = pytest.mark.integration
READ = ["proposals:read"]


@pytest.fixture(scope="module")
async def client(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap))
    async with running(app) as c:
        yield c


def _edit(snap: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out = copy.deepcopy(snap)
    at: Any = out
    keys = path.split(".")
    for k in keys[:-1]:
        at = at[int(k)] if k.isdigit() else at[k]
    at[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return out


@pytest.mark.parametrize(("path", "value", "says"), [
    ("cash_usd", "1e400", "cash is outside"),
    ("securities.0.price_usd", "1e-300", "a price is outside"),
    ("securities.0.price_usd", "1e10", "a price is outside"),
    ("securities.0.half_spread_bps", "1e300", "a half spread (bps) is outside"),
    ("positions.0.lots.0.cost_basis_usd_per_share", "1e300", "basis per share is outside"),
    ("as_of", "0001-01-01T00:00:00+14:00", "is outside the years 1900 to 2200"),
    ("as_of", "9999-12-31T00:00:00Z", "is outside the years 1900 to 2200"),
])
async def test_a_snapshot_beyond_any_account_is_a_422(client, path: str, value: str, says: str) -> None:
    snap = drifted(f"acc-{uuid.uuid4().hex[:6]}").model_dump(mode="json")
    r = await client.post("/v1/rebalance/what-if", headers=auth(scopes=READ), json=_edit(snap, path, value))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert says in r.json()["detail"], r.json()


async def test_a_context_beyond_any_market_is_a_422_and_a_sound_one_solves(client) -> None:
    snap = drifted(f"acc-{uuid.uuid4().hex[:6]}").model_dump(mode="json")
    symbol = snap["securities"][0]["symbol"]
    for info in ({"sigma_daily": "1e300"}, {"adv_usd": "1e300"}):
        r = await client.post("/v1/rebalance/what-if", headers=auth(scopes=READ),
                              json={"snapshot": snap, "context": {"securities": {symbol: info}}})
        assert r.status_code == 422 and r.json()["kind"] == "invalid_context", r.text
    r = await client.post("/v1/rebalance/what-if", headers=auth(scopes=READ),
                          json={"snapshot": snap, "context": {"securities": {symbol: {"sigma_daily": "0.02",
                                                                                     "adv_usd": "5e8"}}}})
    assert r.status_code == 200, r.text


async def test_a_household_withdrawal_beyond_any_account_is_a_422(client) -> None:
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    taxable, ira = bond_in_taxable(hh, hh)
    r = await client.post("/v1/households/what-if", headers=auth(scopes=READ), json={
        "household_id": hh, "snapshots": [s.model_dump(mode="json") for s in (taxable, ira)],
        "withdrawals_usd": {taxable.account_id: "1e400"}})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
