"""Request dates are ISO strings: pydantic's lax mode read a number as days since 1970, so a
replay posted with `"start": 0` (found by `make fuzz`, schemathesis' negative_data_rejection)
was started from 1 Jan 1970 and published ticks."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from trimtab.drift_monitor.schemas import LotIn, WithdrawalIn
from trimtab.market_data.schemas import ReplayIn
from trimtab.risk.schemas import ScenarioIn


@pytest.mark.parametrize("number", [0, 19000, 1.5])
def test_a_number_is_not_a_date(number: float) -> None:
    with pytest.raises(ValidationError, match="ISO 8601"):
        ReplayIn.model_validate({"start": number, "end": "2020-01-01"})
    with pytest.raises(ValidationError, match="ISO 8601"):
        WithdrawalIn.model_validate({"amount_usd": "10", "due_on": number})
    with pytest.raises(ValidationError, match="ISO 8601"):
        LotIn.model_validate({"lot_id": "L1", "symbol": "VTI", "shares": "1", "cost_basis_usd_per_share": "1",
                              "acquired_on": number})


def test_iso_strings_and_dates_still_are() -> None:
    r = ReplayIn.model_validate({"start": "2019-12-02", "end": date(2020, 1, 3)})
    assert (r.start, r.end) == (date(2019, 12, 2), date(2020, 1, 3))
    assert ScenarioIn.model_fields["start"].is_required() is False


def test_the_risk_what_ifs_garch_flag_is_a_json_boolean() -> None:
    """`make fuzz` (negative_data_rejection): `"garch": 1` was read as true."""
    from trimtab.risk.schemas import WhatIfIn

    with pytest.raises(ValidationError):
        WhatIfIn.model_validate({"weights": {"VTI": "1"}, "garch": 1})
    assert WhatIfIn.model_validate({"weights": {"VTI": "1"}, "garch": True}).garch is True


async def test_the_audit_exports_time_filters_are_iso_not_unix_times() -> None:
    """`make fuzz`: `GET /v1/audit/export?until=0` was read as 1 Jan 1970 (a Unix time)."""
    import httpx

    from tests.support import auth, settings
    from trimtab.audit.app import Settings, create

    app = create(settings(Settings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for bad in ("0", "1700000000", "1.5e9"):
            r = await c.get("/v1/audit/export", params={"until": bad}, headers=auth(scopes=["audit:read"]))
            assert r.status_code == 422 and "ISO 8601" in r.text, (bad, r.text)


async def test_latest_prices_take_symbols_as_the_master_spells_them() -> None:
    """`make fuzz`: any text in `symbols` was looked up (and gave []); it is a 422 now."""
    import httpx

    from tests.support import auth, settings
    from trimtab.market_data.app import Settings, create

    app = create(settings(Settings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/prices/latest", params={"symbols": [".exe", "\x13x"]}, headers=auth(scopes=["market:read"]))
    assert r.status_code == 422, r.text
