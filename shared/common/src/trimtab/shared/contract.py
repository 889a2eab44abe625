"""The published event contract as files: one JSON Schema per event and one AsyncAPI 3.0
document for every topic. `python -m trimtab.shared.contract docs/events` writes them; a test
checks the committed files equal what the code generates, so the contract never drifts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .envelope import Envelope
from .events import EVENTS, dlq_topic


def event_schema(event_type: str) -> dict[str, Any]:
    topic, model, version = EVENTS[event_type]
    env = Envelope.model_json_schema()
    payload = model.model_json_schema(mode="serialization")
    env["properties"]["payload"] = {"$ref": "#/$defs/" + model.__name__}
    defs = {**env.pop("$defs", {}), **payload.pop("$defs", {}), model.__name__: payload}
    env["properties"]["event_type"] = {"const": event_type, "type": "string"}
    env["properties"]["schema_version"] = {"const": version, "type": "integer"}
    env["$defs"] = defs
    env["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    env["$id"] = f"https://trimtab.dev/schemas/{topic}/{event_type}.json"
    env["title"] = f"{event_type} ({topic})"
    env["description"] = (model.__doc__ or "").strip()
    return env


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for etype, (topic, _, _) in sorted(EVENTS.items()):
        messages[etype] = {"name": etype, "contentType": "application/json",
                           "payload": {"$ref": f"./{etype}.schema.json"}}
        channels[topic] = {"address": topic, "messages": {etype: {"$ref": f"#/components/messages/{etype}"}},
                           "description": f"Dead letters go to {dlq_topic(topic)} with dlq.* headers."}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Trimtab events", "version": "1.0.0",
                 "description": "Every event is an envelope (event_id, event_type, schema_version, occurred_at, "
                                "producer, tenant_id, correlation_id, causation_id, trace) around a typed payload. "
                                "Money and shares are decimal strings."},
        "channels": channels,
        "components": {"messages": messages},
    }


def render() -> dict[str, str]:
    files = {f"{et}.schema.json": json.dumps(event_schema(et), indent=2, sort_keys=True) + "\n" for et in EVENTS}
    files["asyncapi.yaml"] = yaml.safe_dump(asyncapi(), sort_keys=True)
    return files


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/events")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (out / name).write_text(text)
    print(f"wrote {len(render())} files to {out}")


if __name__ == "__main__":
    main()
