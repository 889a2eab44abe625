"""deploy/ checked against the code: the alerting rules, the Grafana dashboard and the scrape
configs may only name metrics the services really export, and must be well-formed.

The exported names are derived, not listed: every instrument the code creates
(`meter.create_counter("name", unit=...)` and the like, found in the source of shared/ and
services/) is re-created with its name, kind and unit on a private meter provider, next to a
real service app instrumented by the project's own `instrument_app`; the same OpenTelemetry
Prometheus reader the services use (telemetry.py) then renders them, so the `_total`, unit and
histogram suffixes are the exporter's, not ours. `up` and the scrape_* series are the only names
taken from Prometheus itself.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from trimtab_dev.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
SCRAPE = {"compose": ROOT / "deploy" / "prometheus" / "prometheus.yml",
          "local": ROOT / "deploy" / "prometheus" / "prometheus.local.yml"}
DASHBOARD = ROOT / "deploy" / "grafana" / "trimtab-overview.json"
OPERATIONS = ROOT / "docs" / "operations.md"
SOURCES = [*(ROOT / "shared").glob("*/src"), *(ROOT / "services").glob("*/src")]

#: Series Prometheus records itself for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added"}
_CREATE = {"create_counter", "create_up_down_counter", "create_histogram", "create_gauge",
           "create_observable_counter", "create_observable_up_down_counter", "create_observable_gauge"}


# ---------------------------------------------------------------------------- what the code exports


def instruments_in_code() -> list[tuple[str, str, str, Path]]:
    """(kind, name, unit, file) of every instrument created in the services' and shared source."""
    found = []
    for src in SOURCES:
        for path in src.rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in _CREATE):
                    continue
                name = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "name"), None)
                unit = next((k.value for k in node.keywords if k.arg == "unit"), None)
                assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
                    f"{path}:{node.lineno}: instrument name must be a literal for this check")
                assert unit is None or (isinstance(unit, ast.Constant) and isinstance(unit.value, str)), (
                    f"{path}:{node.lineno}: instrument unit must be a literal for this check")
                found.append((node.func.attr, name.value, unit.value if unit else "", path))
    return found


def _http_exposition(provider: MeterProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real service app (market-data), instrumented by the project's `instrument_app` onto
    `provider`, answering a few requests."""
    import importlib

    original = FastAPIInstrumentor.instrument_app

    def onto_provider(app: Any, **kw: Any) -> None:
        original(app, meter_provider=provider, **kw)

    monkeypatch.setattr(FastAPIInstrumentor, "instrument_app", staticmethod(onto_provider))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    module = importlib.import_module(SERVICES["market-data"][0].split(":")[0])
    try:
        app = module.create(module.Settings())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing connects
    assert client.get("/v1/openapi.json").status_code == 200
    assert client.get("/v1/no-such-route").status_code == 404
    assert client.post("/v1/openapi.json", content=b"{}").status_code == 405  # a request body


def exported_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    meter = provider.get_meter("observability-test")
    for kind, name, unit, _ in instruments_in_code():
        if kind.startswith("create_observable_"):
            getattr(meter, kind)(name, callbacks=[lambda _o: [metrics.Observation(1)]], unit=unit)
        elif kind == "create_histogram":
            meter.create_histogram(name, unit=unit).record(1)
        elif kind == "create_gauge":
            meter.create_gauge(name, unit=unit).set(1)
        else:
            getattr(meter, kind)(name, unit=unit).add(1)
    _http_exposition(provider, monkeypatch)
    # prometheus_client's default collectors, which /metrics (generate_latest()) also serves.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    text = generate_latest(registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    mp = pytest.MonkeyPatch()
    try:
        return exported_names(mp)
    finally:
        mp.undo()


# ---------------------------------------------------------------------------- names used in PromQL

_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
          "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels excluded)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables
    out = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        if m.group(2) or m.group(1).lower() in _WORDS:
            continue
        out.add(m.group(1))
    return out


def test_metric_name_extraction_finds_every_selected_metric() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, service) (rate(a_bucket{x="y{z}", le!="1"}[5m])))'
            ' / on (service) group_left(consumer) b_total offset 5m > bool 1e3 and c unless'
            ' sum without (topic) (d{service=~"$service"}[$__rate_interval]) or vector(0)')
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}


def test_exported_names_come_from_the_code(exported: set[str]) -> None:
    # A sanity check of the derivation itself: the consumer's instruments and the HTTP server
    # instrumentation are there under the exporter's names, and nothing made up is.
    kinds = {name: kind for kind, name, _, _ in instruments_in_code()}
    assert kinds["trimtab_events_processed"] == "create_counter"
    assert {"trimtab_events_processed_total", "trimtab_handler_duration_milliseconds_bucket",
            "http_server_duration_milliseconds_count", "process_cpu_seconds_total"} <= exported
    assert "trimtab_events_processed" not in exported and "trimtab_no_such_metric" not in exported


# ---------------------------------------------------------------------------- alerts.yml


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("groups"), list) and doc["groups"]
    rules = []
    for g in doc["groups"]:
        assert g.get("name") and isinstance(g.get("rules"), list) and g["rules"], g
        rules += g["rules"]
    return rules


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_alert_rules_are_well_formed_and_each_has_a_runbook() -> None:
    rules = alert_rules()
    names = [r.get("alert") for r in rules]
    assert all(names) and len(names) == len(set(names)), names
    anchors = _anchors(OPERATIONS.read_text())
    for r in rules:
        where = r["alert"]
        assert isinstance(r.get("expr"), str) and r["expr"].strip(), where
        assert re.fullmatch(r"\d+[smhd]", str(r.get("for", ""))), f"{where}: for"
        assert r.get("labels", {}).get("severity") in {"critical", "warning", "info"}, where
        ann = r.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), where
        doc, _, anchor = ann.get("runbook_url", "").partition("#")
        assert doc == "docs/operations.md" and anchor == where.lower(), f"{where}: runbook_url"
        assert anchor in anchors, f"{where}: docs/operations.md has no section #{anchor}"
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, where


def test_alerts_name_only_exported_metrics(exported: set[str]) -> None:
    known = exported | PROMETHEUS_SERIES
    for r in alert_rules():
        used = metric_names(r["expr"])
        assert used, f"{r['alert']}: no metric found in its expression"
        assert used <= known, f"{r['alert']}: not exported by any service: {sorted(used - known)}"


# ---------------------------------------------------------------------------- the dashboard


def dashboard_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out += p.get("panels", [])  # panels inside collapsed rows
    return out


def test_dashboard_is_valid_with_unique_ids_units_and_variables() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert 36 <= d["schemaVersion"] <= 41 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query" and service["datasource"]["uid"] == "${datasource}"
    assert "service)" in service["definition"] and service["includeAll"]
    panels = dashboard_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Event flow", "HTTP", "Outbox / relay", "Optimizer", "Explainer", "Audit"], rows
    for p in panels:
        if p["type"] == "row":
            continue
        where = f"panel {p['id']} {p['title']!r}"
        assert p["datasource"]["uid"] == "${datasource}", where
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), where
        assert all('service=~"$service"' in t["expr"] for t in p["targets"]), f"{where}: not filtered by $service"
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, where


def test_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    d = json.loads(DASHBOARD.read_text())
    known = exported | PROMETHEUS_SERIES
    queries = [(f"panel {p['id']} {p['title']!r}", t["expr"]) for p in dashboard_panels(d) for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", v["definition"])
            assert m, v["definition"]
            queries.append((f"variable {v['name']}", m.group(1)))
    for where, expr in queries:
        used = metric_names(expr)
        assert used, f"{where}: no metric in {expr}"
        assert used <= known, f"{where}: not exported by any service: {sorted(used - known)}"


# ---------------------------------------------------------------------------- scrape configs


def test_scrape_configs_cover_the_six_services_with_a_service_label() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port_in_container = compose["x-service-env"]["HTTP_PORT"]
    for variant, path in SCRAPE.items():
        cfg = yaml.safe_load(path.read_text())
        assert cfg["rule_files"] == ["alerts.yml"], variant
        [job] = cfg["scrape_configs"]
        assert job["job_name"] == "trimtab" and job.get("metrics_path", "/metrics") == "/metrics"
        targets = {sc["labels"]["service"]: sc["targets"] for sc in job["static_configs"]}
        assert set(targets) == set(SERVICES), variant
        for name, (_, default_port) in SERVICES.items():
            expected = f"{name}:{port_in_container}" if variant == "compose" else f"127.0.0.1:{default_port}"
            assert targets[name] == [expected], (variant, name)
            if variant == "compose":
                assert compose["services"][name]["environment"]["HTTP_PORT"] == port_in_container
    prom = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    grafana = compose["services"]["grafana"]
    for volume in grafana["volumes"]:
        assert (ROOT / volume.split(":")[0]).is_dir(), volume
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------------------- promtool, where installed


def test_promtool_accepts_the_rules_their_unit_tests_and_the_dashboard_queries(tmp_path: Path) -> None:
    """`promtool` (Debian: apt-get install prometheus) parses every expression and runs
    deploy/prometheus/alerts.test.yml. Without it the structural tests above still run."""
    promtool = shutil.which("promtool")
    if promtool is None and os.environ.get("TRIMTAB_REQUIRE_PROMTOOL"):
        pytest.fail("TRIMTAB_REQUIRE_PROMTOOL is set (.ci/run) but promtool is not on PATH: "
                    "the alert rules' unit tests would not run")
    if promtool is None:
        # Structure and names are checked above; PromQL syntax is then checked by the extractor
        # only, so at least insist the expressions are balanced.
        for r in alert_rules():
            e = r["expr"]
            assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), r["alert"]
        return

    def run(*args: str) -> None:
        p = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ALERTS.parent)
        assert p.returncode == 0, f"promtool {' '.join(args)}:\n{p.stdout}\n{p.stderr}"

    run("check", "rules", str(ALERTS))
    run("test", "rules", str(ALERT_TESTS))
    for path in SCRAPE.values():
        run("check", "config", "--syntax-only", str(path))
    # Dashboard queries as recording rules, Grafana variables replaced by what Grafana sends.
    d = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"dashboard:panel_{p['id']}_{t['refId']}",
              "expr": t["expr"].replace("$__rate_interval", "1m").replace("$service", ".*")}
             for p in dashboard_panels(d) for t in p.get("targets", [])]
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run("check", "rules", str(rules_file))
