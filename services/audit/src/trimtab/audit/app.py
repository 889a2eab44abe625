"""Composition root of audit: settings, runtime, one handler per event type, checkpoints, routes.

Run with `uvicorn --factory trimtab.audit.app:create`. Nothing runs at import time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from trimtab.shared.consumer import ANY_EVENT
from trimtab.shared.events import EVENTS
from trimtab.shared.http import create_app
from trimtab.shared.runtime import ServiceRuntime

from . import api, handlers
from .checkpoints import Checkpointer
from .domain import bus
from .keys import load_signer, load_trusted_keys
from .models import SCHEMA, infra, metadata
from .settings import Settings

__all__ = ["Settings", "create"]


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra,
                             park_keys=False,  # the record does not depend on per-key order
                             # one span per run (linking the events' producers), not one per message
                             receive_spans=False,
                             # redeliveries reach the handler, which tells them from forgeries
                             recheck_duplicates=True)
    # Every event type, each on its own topic, in the one consumer group "audit": the record
    # must hold everything, and one group keeps one consumer's marker per event.
    # A run of events of one partition is appended in one call: one lock, one head read, one
    # commit for the whole run instead of one each (see handlers.append).
    # ANY_EVENT: an event type none of EVENTS names, on one of their topics (a producer upgraded
    # before the record), is recorded as unknown, not skipped.
    record = runtime.handle_batch([*EVENTS, ANY_EVENT])(handlers.on_events)
    # Every message is read by the record's own decoder (domain/bus.py): one of our events as
    # ever; a foreign one (no event id, ..., or not canonical bytes) with the missing values
    # derived from its place on the bus, so a redelivery has the same event id and is recorded
    # once, and with its exact bytes kept.
    record.decode = bus.read_record

    def sessions():  # the sessionmaker exists only once the runtime has started
        assert runtime.sessionmaker is not None, "runtime not started"
        return runtime.sessionmaker

    signer = load_signer(settings)
    # The keys whose checkpoints verification accepts: this instance's and AUDIT_TRUSTED_PUBLIC_KEYS.
    trusted_keys = load_trusted_keys(settings, signer)
    # The checkpoint file is the witness outside the database (signing and verify compare with its
    # last line); an empty AUDIT_CHECKPOINT_DIR means none, and the database alone vouches.
    directory = settings.audit_checkpoint_dir.strip()
    checkpointer = Checkpointer(sessions, signer, Path(directory) if directory else None,
                                settings.audit_checkpoint_interval_s, trusted_keys)

    @runtime.on_start
    async def _start_checkpoints() -> None:
        checkpointer.start()

    @runtime.on_stop
    async def _stop_checkpoints() -> None:
        await checkpointer.stop()

    app = create_app(runtime, [api.router], title="Trimtab audit",
                     description="The append-only record of every event as an RFC 6962 Merkle tree: "
                                 "signed checkpoints, inclusion and consistency proofs, verification.")
    app.state.checkpointer = checkpointer
    app.state.trusted_keys = trusted_keys
    return app
