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
