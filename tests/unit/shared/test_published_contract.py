"""The committed JSON Schemas and AsyncAPI document equal what the code generates."""

from __future__ import annotations

import json
from pathlib import Path

from trimtab.shared.contract import event_schema, render

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events"


def test_committed_contract_matches_code() -> None:
    for name, text in render().items():
        assert (DOCS / name).read_text() == text, f"docs/events/{name} is stale: run python -m trimtab.shared.contract"


def test_oms_contract_names_client_order_ids() -> None:
    s = event_schema("TradesApproved")
    order = s["$defs"]["Order"]["properties"]
    assert "client_order_id" in order and order["shares"]["type"] == "string"
    assert json.dumps(s)
