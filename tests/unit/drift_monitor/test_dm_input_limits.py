"""Input validation of drift-monitor without a database: which policy fields may be null and what
a stored null resolves to, the magnitude bounds of the request models, and a CSV cell over the
csv module's field limit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from trimtab.drift_monitor.domain.rules import Policy, clean_policy, resolve_policy
from trimtab.drift_monitor.schemas import (
    MAX_PRICE,
    MAX_SHARES,
    MAX_USD,
    AccountIn,
    CashFlowIn,
    LotsIn,
    PolicyIn,
    WithdrawalIn,
)
from trimtab.drift_monitor.snapshots import policy_out
from trimtab.drift_monitor.transfer import ImportError_, _rows

D = Decimal
NULLABLE = [f for f in PolicyIn.model_fields if f != "automation"]


def test_automation_null_is_refused_left_out_inherits():
    with pytest.raises(ValidationError, match="automation cannot be null"):
        PolicyIn.model_validate({"automation": None})
    assert PolicyIn.model_validate({}).stored() == {}
    assert PolicyIn.model_validate({"automation": "automatic"}).stored() == {"automation": "automatic"}


@pytest.mark.parametrize("name", NULLABLE)
def test_every_other_policy_field_may_be_null_and_resolves(name):
    """null on any other field is "off" (min_interval_days: 0); the effective policy and its
    output are well-formed, also over a model that sets every field."""
    stored = PolicyIn.model_validate({name: None}).stored()
    assert stored == {name: None}
    model = {"band_abs": "0.1", "band_rel": "0.2", "portfolio_band": "0.1", "trade_back_band": "0.02",
             "min_interval_days": 5, "cash_trigger_usd": "100", "automation": "automatic",
             "max_turnover": "0.5", "max_tax_usd": "1000"}
    for layers in ((stored,), (model, stored)):
        p = resolve_policy(*layers)
        assert getattr(p, name) == (0 if name == "min_interval_days" else None)
        policy_out(p)  # no ValidationError


def test_a_stored_null_automation_falls_back_to_the_layer_below():
    assert resolve_policy({"automation": None}).automation == Policy().automation
    assert resolve_policy({"automation": "automatic"}, {"automation": None}).automation == "automatic"
    assert resolve_policy({"automation": None}, {"automation": "propose_only"}).automation == "propose_only"
    assert policy_out(resolve_policy({"automation": None}, {"automation": None})).automation == "advisor_approval"
    assert clean_policy({"automation": None, "band_abs": None}) == {"band_abs": None}
    assert clean_policy(None) == {}


def _lot(lid: str, shares: str, basis: str = "1") -> dict:
    return {"lot_id": lid, "symbol": "AAA", "shares": shares, "cost_basis_usd_per_share": basis,
            "acquired_on": "2022-01-03"}


def _acc(**kw) -> dict:  # type: ignore[no-untyped-def]
    return {"account_id": "a1", "model_id": "m1", "cash_usd": "1", **kw}


@pytest.mark.parametrize("body", [
    _acc(cash_usd="99999999999999.999999"),
    _acc(cash_usd=str(MAX_USD + D("0.000001"))),
    _acc(cash_reserve_usd=str(MAX_USD + 1)),
    _acc(policy={"cash_trigger_usd": str(MAX_USD + 1)}),
    _acc(policy={"max_tax_usd": str(MAX_USD + 1)}),
    _acc(lots=[_lot("L1", "99999999999999999999.99999999")]),
    _acc(lots=[_lot("L1", str(MAX_SHARES + D("0.00000001")))]),
    _acc(lots=[_lot("L1", str(MAX_SHARES)), _lot("L2", "0.00000001")]),
    _acc(lots=[_lot("L1", "1", basis=str(MAX_PRICE + D("0.00000001")))]),
    _acc(cash_usd="NaN"),
    _acc(cash_usd="Infinity"),
])
def test_account_magnitudes_are_bounded(body):
    with pytest.raises(ValidationError):
        AccountIn.model_validate(body)


def test_the_bounds_themselves_are_accepted():
    a = AccountIn.model_validate(_acc(cash_usd=str(MAX_USD), cash_reserve_usd=str(MAX_USD),
                                      lots=[_lot("L1", str(MAX_SHARES - 1), basis=str(MAX_PRICE)), _lot("L2", "1")]))
    assert sum(x.shares for x in a.lots) == MAX_SHARES
    # Everything derived fits its column: the value below 10^18 (drifts NUMERIC(20,2)), cash
    # below 10^14 (NUMERIC(20,6)).
    assert MAX_SHARES * MAX_PRICE + MAX_USD < D(10) ** 18
    assert MAX_USD < D(10) ** 14
    with pytest.raises(ValidationError):
        LotsIn.model_validate({"lots": [_lot("L1", str(MAX_SHARES)), _lot("L2", "1")]})
    with pytest.raises(ValidationError):
        LotsIn.model_validate({"lots": [], "cash_usd": "99999999999999.999999"})


@pytest.mark.parametrize("amount", ["99999999999999.999999", str(MAX_USD + D("0.01")), str(-MAX_USD - 1), "0"])
def test_cash_flows_are_bounded(amount):
    with pytest.raises(ValidationError):
        CashFlowIn.model_validate({"amount_usd": amount})


def test_withdrawals_are_bounded():
    assert WithdrawalIn.model_validate({"amount_usd": str(MAX_USD), "due_on": "2030-01-01"}).amount_usd == MAX_USD
    with pytest.raises(ValidationError):
        WithdrawalIn.model_validate({"amount_usd": str(MAX_USD + D("0.01")), "due_on": "2030-01-01"})


def test_a_csv_cell_over_the_field_limit_names_the_line():
    text = "account_id,model_id\nok,m1\n\"" + "A" * 131_073 + "\",m1\n"
    with pytest.raises(ImportError_, match=r"CSV line 3: a cell is longer than 131072 characters"):
        list(_rows(text, "csv"))
