"""The optimizer service under test (one per test module) and a producer to feed it."""

from __future__ import annotations

import pytest

from tests.support import running, settings, wait_consumers_assigned
from trimtab.optimizer.app import Settings, create
from trimtab.shared.kafka import start_producer


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    """(app, client) of an optimizer with default settings, its consumers assigned. A module
    that needs other settings defines its own `service`."""
    app = create(settings(Settings, database_url, kafka_bootstrap))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


@pytest.fixture(scope="module")
async def producer(request, kafka_bootstrap):
    p = await start_producer(kafka_bootstrap, f"optimizer-tests-{request.module.__name__.rsplit('.', 1)[-1]}")
    yield p
    await p.stop()


@pytest.fixture
def client(service):
    return service[1]
