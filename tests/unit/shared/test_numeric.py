"""The numeric platform of the replayed services: one BLAS kernel, set where they start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from trimtab.shared.numeric import (
    PINNED_BLAS,
    PINNED_CORE_NAMES,
    REPLAYED_SERVICES,
    pinned_environment,
    service_environment,
)

ROOT = Path(__file__).resolve().parents[3]


def test_the_pin_fills_only_what_the_environment_leaves_unset() -> None:
    assert pinned_environment({"A": "1"}, machine="x86_64") == {"A": "1", **PINNED_BLAS}
    chosen = {"OPENBLAS_CORETYPE": "Haswell"}
    assert pinned_environment(chosen, machine="x86_64")["OPENBLAS_CORETYPE"] == "Haswell"
    assert pinned_environment({"A": "1"}, machine="aarch64") == {"A": "1"}  # other kernel names


def test_the_replayed_services_and_only_they_are_pinned() -> None:
    base = {"PATH": "/bin"}
    for service in ("optimizer", "explainer", "audit", "drift-monitor", "risk", "market-data"):
        env = service_environment(service, base)
        pinned = os.uname().machine.lower() in ("x86_64", "amd64") and service in REPLAYED_SERVICES
        assert ("OPENBLAS_CORETYPE" in env) == pinned, service


def test_docker_compose_pins_the_same_services_alike() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in REPLAYED_SERVICES:
        env = compose[service]["environment"]
        assert {k: str(env[k]) for k in PINNED_BLAS} == PINNED_BLAS, service


def test_a_process_started_pinned_runs_the_pinned_kernel() -> None:
    """OpenBLAS reads the pin when numpy loads: what a service started by the stack runs."""
    code = "from trimtab.shared.numeric import blas_core; print(blas_core())"
    env = service_environment("optimizer", dict(os.environ))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True, timeout=120).stdout.strip()
    if env.get("OPENBLAS_CORETYPE") == PINNED_BLAS["OPENBLAS_CORETYPE"]:
        assert out in PINNED_CORE_NAMES
    else:  # not x86-64, or the environment chose a kernel of its own
        assert out not in ("", "None")
