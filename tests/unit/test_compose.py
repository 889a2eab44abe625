"""docker-compose.yml checked against the code: no Docker engine runs here, so this is what keeps
the production-like stack description from rotting."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from trimtab.shared.kafka import all_topics
from trimtab.shared.numeric import PINNED_BLAS
from trimtab_dev.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _aliases(settings_cls) -> set[str]:  # type: ignore[no-untyped-def]
    return {str(f.validation_alias) for f in settings_cls.model_fields.values() if f.validation_alias}


def test_every_service_is_built_from_the_dockerfile_and_runs_its_factory() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The one Dockerfile runs trimtab.<SERVICE_NAME with - as _>.app:create, SERVICE_NAME = SERVICE.
    assert 'trimtab.$(echo \\"$SERVICE_NAME\\" | tr - _).app:create' in dockerfile
    assert "SERVICE_NAME=$SERVICE" in dockerfile and '--package "trimtab-$SERVICE"' in dockerfile
    for name, (factory, _) in SERVICES.items():
        build = COMPOSE["services"][name]["build"]
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile" and build["context"] == "."
        assert build["args"]["SERVICE"] == name
        assert (ROOT / "services" / name / "pyproject.toml").exists(), name
        module, func = factory.split(":")
        assert factory == f"trimtab.{name.replace('-', '_')}.app:create", factory
        assert callable(getattr(importlib.import_module(module), func))


def test_service_environment_matches_the_settings_each_service_reads() -> None:
    for name, (factory, _) in SERVICES.items():
        module = importlib.import_module(factory.split(":")[0])
        settings_cls = module.Settings
        env = COMPOSE["services"][name]["environment"]
        # OpenBLAS reads the pinned kernel's variables when numpy loads (shared/numeric.py).
        unknown = set(env) - _aliases(settings_cls) - set(PINNED_BLAS)
        assert not unknown, f"{name}: compose sets variables the service does not read: {unknown}"
        for required in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET", "SERVICE_NAME"):
            assert required in env, f"{name} lacks {required}"
        assert env["SERVICE_NAME"] == name
        assert "kafka:9092" in env["KAFKA_BOOTSTRAP_SERVERS"] and "@postgres:" in env["DATABASE_URL"]


def test_every_topic_and_its_dead_letter_topic_is_created() -> None:
    script = "\n".join(COMPOSE["services"]["kafka-init"]["command"])
    for topic in all_topics():
        assert f"--topic {topic} " in script, topic


def test_infrastructure_is_the_production_kind() -> None:
    kafka = COMPOSE["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka") and "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert COMPOSE["services"]["postgres"]["image"].startswith("postgres:")
    assert "otel-collector" in COMPOSE["services"]
