"""CPU work off the event loop: one worker thread by default, or N spawned processes.

The optimizer's solves and the explainer's re-solves are CPU-bound and would stall the event
loop (health checks, consumers). A thread keeps one compiled problem per shape in-process; more
processes use more cores (the GIL stops threads from solving in parallel).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class WorkerCrashed(RuntimeError):
    """A worker process died running the job (killed, out of memory, a crash in native code),
    and again when the job ran alone in a process of its own: the job itself is the cause."""


def _process_pool(processes: int) -> ProcessPoolExecutor:
    # spawn: a forked child of a process running an event loop and Kafka clients would inherit
    # their sockets and locks.
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))


class CpuWorkers:
    """`start()` before use, `stop()` at shutdown; `run(fn, *args)` awaits `fn(*args)` in a worker.

    With processes, `fn` and its arguments must be picklable (module-level functions, JSON-like
    data).
    """

    def __init__(self, processes: int, *, name: str) -> None:
        self._processes = processes
        self._name = name
        self._executor: Executor | None = None

    def start(self) -> None:
        if self._processes > 0:
            self._executor = _process_pool(self._processes)
        else:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker. A process pool broken by a dying worker is rebuilt (a pool
        once broken refuses every later job: without the rebuild one crash would fail every job
        until a restart), and the job runs once more **alone**, in a one-off process of its own:
        with several jobs in the pool at once (`runtime.concurrent`), the pool's breaking says
        only that one of them killed its worker, so each is tried again on its own and only the
        one that kills its own process again is `WorkerCrashed`."""
        if self._executor is None:
            raise RuntimeError(f"{self._name} workers not started")
        executor = self._executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BrokenExecutor as e:
            log.error("%s worker pool broken (%r); rebuilding it", self._name, e)
            if self._executor is executor:  # not already rebuilt by a concurrent job
                executor.shutdown(wait=False, cancel_futures=True)
                self.start()
        alone = _process_pool(1)
        try:
            return await asyncio.get_running_loop().run_in_executor(alone, fn, *args)
        except BrokenExecutor as e:
            raise WorkerCrashed(f"a {self._name} worker died running {getattr(fn, '__name__', fn)} "
                                "twice, the second time alone") from e
        finally:
            alone.shutdown(wait=False, cancel_futures=True)

    async def warm(self, fn: Callable[[], Any]) -> None:
        """Run `fn` once in every worker (imports, compiles), so the first real job does not
        pay for them. Warming is an optimization: a failure is logged, not raised."""
        try:
            await asyncio.gather(*(self.run(fn) for _ in range(max(1, self._processes))))
        except Exception:
            log.warning("could not warm the %s workers", self._name, exc_info=True)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
