"""The CPU worker pool shared by the optimizer and the explainer."""

from __future__ import annotations

import threading

import pytest

from trimtab.shared.workers import CpuWorkers


def _thread_name() -> str:
    return threading.current_thread().name


async def test_runs_off_the_event_loop_thread_and_refuses_before_start() -> None:
    w = CpuWorkers(0, name="probe")
    with pytest.raises(RuntimeError):
        await w.run(_thread_name)
    w.start()
    try:
        name = await w.run(_thread_name)
        assert name.startswith("probe") and name != threading.current_thread().name
        await w.warm(_thread_name)  # runs once per worker without raising
    finally:
        w.stop()


def _die() -> None:
    import os

    os._exit(13)  # a worker killed mid-job (out of memory, a crash in native code)


def _fine() -> str:
    return "fine"


async def test_a_dead_worker_process_does_not_break_later_jobs() -> None:
    """A process that dies breaks its pool (every later job would be refused until a restart):
    the pool is rebuilt, a job that kills its worker twice is `WorkerCrashed`, and the next job
    runs."""
    from trimtab.shared.workers import WorkerCrashed

    w = CpuWorkers(1, name="probe")
    w.start()
    try:
        assert await w.run(_fine) == "fine"
        with pytest.raises(WorkerCrashed):
            await w.run(_die)
        assert await w.run(_fine) == "fine"
        assert await w.run(_fine) == "fine"
    finally:
        w.stop()


def _sleep_then(value: str) -> str:
    import time

    time.sleep(0.5)
    return value


async def test_a_job_that_kills_its_worker_fails_alone_not_the_jobs_beside_it() -> None:
    """Jobs run side by side in one pool (a service handling several partitions at once): one
    kills its worker, which breaks the pool for every job in it. Each is tried again alone, so
    only the culprit is `WorkerCrashed`; the others return their results."""
    import asyncio

    from trimtab.shared.workers import WorkerCrashed

    w = CpuWorkers(3, name="probe")
    w.start()
    try:
        await w.warm(_fine)
        results = await asyncio.gather(w.run(_sleep_then, "a"), w.run(_die), w.run(_sleep_then, "b"),
                                       return_exceptions=True)
        assert results[0] == "a" and results[2] == "b", results
        assert isinstance(results[1], WorkerCrashed)
        assert await w.run(_fine) == "fine"
    finally:
        w.stop()
