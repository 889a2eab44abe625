# Trimtab — the commands. Each target creates the environment first, so each works alone on a
# fresh machine that has only Python 3.11+.
SHELL := /bin/bash
PY := .venv/bin/python
UV = $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=

.PHONY: install demo up test test-unit test-integration test-e2e bench fuzz lint clean

install: .venv/.installed

.venv/.installed: uv.lock pyproject.toml shared/*/pyproject.toml services/*/pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		{ echo "[trimtab] installing uv from PyPI"; python3 -m pip install --quiet --disable-pip-version-check uv; }
	$(UV) sync --all-packages --frozen
	@touch $@

demo: install
	$(PY) -m trimtab_dev.demo $(DEMO_ARGS)

up: install
	$(PY) -m trimtab_dev.stack

test: install
	$(PY) -m pytest tests/unit tests/integration tests/e2e -q $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

test-e2e: install
	$(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

bench: install
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

fuzz: install
	$(PY) -m trimtab_dev.fuzz $(FUZZ_ARGS)

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf .venv .trimtab .pytest_cache
