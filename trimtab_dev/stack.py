"""The local stack: a Kafka-protocol broker, PostgreSQL, and the six services as separate
processes (uvicorn), each with its own port, log file and environment.

Used by `make demo`, `make up`, the e2e tests and the benchmarks, so all of them run the very same
processes a deployment would. Infrastructure comes from `trimtab.shared.infra` (Tansu unless
`KAFKA_BOOTSTRAP_SERVERS` is set; `DATABASE_URL`, else a local server, else embedded PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from trimtab.shared.infra import (
    Broker,
    Database,
    ensure_database,
    free_port,
    resolve_database,
    start_tansu,
)
from trimtab.shared.numeric import service_environment

ROOT = Path(__file__).resolve().parent.parent

#: service name -> (import path of its app factory, default port)
SERVICES: dict[str, tuple[str, int]] = {
    "market-data": ("trimtab.market_data.app:create", 8101),
    "drift-monitor": ("trimtab.drift_monitor.app:create", 8102),
    "optimizer": ("trimtab.optimizer.app:create", 8103),
    "risk": ("trimtab.risk.app:create", 8104),
    "explainer": ("trimtab.explainer.app:create", 8105),
    "audit": ("trimtab.audit.app:create", 8106),
}


def say(msg: str) -> None:
    print(f"[trimtab] {msg}", flush=True)


@dataclass
class ServiceProc:
    name: str
    port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        factory, _ = SERVICES[self.name]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash would be."""
        self.stop(signal.SIGKILL)


def worker_processes() -> dict[str, str]:
    """Solver and explainer worker processes, one per core unless the environment says
    otherwise: each service then handles that many partitions at once (`runtime.concurrent`),
    so both cores work on a burst of proposals (the service default, 0, is one thread)."""
    n = str(os.cpu_count() or 1)
    return {k: os.environ.get(k, n) for k in ("SOLVER_PROCESSES", "EXPLAINER_PROCESSES")}


@dataclass
class Stack:
    workdir: Path = field(default_factory=lambda: ROOT / ".trimtab")
    database_name: str = "trimtab"
    fixed_ports: bool = False
    fresh_database: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    broker: Broker | None = None
    db: Database | None = None
    services: dict[str, ServiceProc] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        assert self.db
        return self.db.url_for(self.database_name)

    @property
    def bootstrap(self) -> str:
        assert self.broker
        return self.broker.bootstrap

    def url(self, service: str) -> str:
        return self.services[service].url

    def start(self, timeout_s: float = 120) -> None:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.broker = Broker(bootstrap=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
            say(f"Kafka: {self.broker.bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        else:
            self.broker = start_tansu(port=19092 if self.fixed_ports else None, log_dir=logs)
            say(f"Kafka: Tansu broker on {self.broker.bootstrap} (memory storage)")
        self.db = resolve_database(self.workdir)
        asyncio.run(ensure_database(self.database_url, recreate=self.fresh_database))
        say(f"PostgreSQL: {self.db.origin}, database {self.database_name}")
        # The audit's checkpoint file witnesses one database's record: it lives and dies with that
        # database (a fresh database with another record's checkpoints would fail verification).
        checkpoints = self.workdir / "audit-checkpoints" / self.database_name
        if self.fresh_database and checkpoints.exists():
            shutil.rmtree(checkpoints)
        checkpoints.mkdir(parents=True, exist_ok=True)
        group_prefix = f"trimtab-{uuid.uuid4().hex[:6]}"
        taken: set[int] = set()
        for name, (_, default_port) in SERVICES.items():
            port = default_port if self.fixed_ports else free_port()
            while port in taken:  # the kernel may hand out a port twice before anyone binds it
                port = free_port()
            taken.add(port)
            env = {
                **os.environ,
                "SERVICE_NAME": name,
                "DATABASE_URL": self.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_GROUP_PREFIX": group_prefix,
                "HTTP_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
                "AUDIT_CHECKPOINT_DIR": str(checkpoints),
                **self.extra_env,
            }
            env = service_environment(name, env)  # one BLAS kernel where replays must match
            self.services[name] = ServiceProc(name, port, logs / f"{name}.log", env)
        # Migrations run in each service's start-up; start them all, then wait for readiness.
        for sp in self.services.values():
            sp.start()
            say(f"started {sp.name} on {sp.url} (log {sp.log_path.relative_to(ROOT) if sp.log_path.is_relative_to(ROOT) else sp.log_path})")
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 120, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names or self.services)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                sp = self.services[name]
                if sp.proc and sp.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {sp.proc.returncode}; see {sp.log_path}:\n"
                                       + tail(sp.log_path))
                try:
                    r = httpx.get(f"{sp.url}/readyz", timeout=2)
                    if r.status_code == 200:
                        pending.discard(name)
                        say(f"{name} ready")
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        if pending:
            raise TimeoutError(f"not ready after {timeout_s}s: {sorted(pending)}")

    def wait_caught_up(self, timeout_s: float = 300, settle_s: float = 2.0) -> bool:
        """Wait until every service's consumers report zero lag twice, `settle_s` apart."""
        deadline = time.monotonic() + timeout_s
        zero_since: float | None = None
        while time.monotonic() < deadline:
            total = 0
            for sp in self.services.values():
                try:
                    total += sum(httpx.get(f"{sp.url}/readyz", timeout=5).json().get("consumer_lag", {}).values())
                except (httpx.HTTPError, ValueError):
                    total += 1
            if total == 0:
                zero_since = zero_since or time.monotonic()
                if time.monotonic() - zero_since >= settle_s:
                    return True
            else:
                zero_since = None
            time.sleep(0.5)
        return False

    def restart(self, name: str, *, kill: bool = True) -> None:
        sp = self.services[name]
        sp.kill() if kill else sp.stop()
        sp.start()
        self.wait_ready(120, [name])

    def stop(self) -> None:
        for sp in self.services.values():
            if sp.proc and sp.proc.poll() is None:
                sp.proc.send_signal(signal.SIGTERM)
        for sp in self.services.values():
            sp.stop()
        if self.broker:
            self.broker.stop()
        say("stack stopped")

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `with Stack()` stops every child it started
    when the supervisor itself is terminated (by `timeout`, a process manager, CI)."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def up() -> None:
    """`make up`: start the stack on fixed ports and keep it running until Ctrl-C."""
    from trimtab.shared.auth import mint_token
    from trimtab.shared.config import ServiceSettings

    stop_on_sigterm()
    stack = Stack(fixed_ports=True, fresh_database=False)
    with stack:
        tok = mint_token(ServiceSettings(), subject="advisor@demo", tenant_id="demo", ttl_s=7 * 86400)
        say("all six services are up:")
        for sp in stack.services.values():
            say(f"  {sp.name:14s} {sp.url}/v1/docs")
        say(f"Kafka {stack.bootstrap}; PostgreSQL {stack.database_url}")
        say(f"a token for tenant 'demo' (all scopes, 7 days):\n{tok}")
        say("Ctrl-C stops everything.")
        try:
            while True:
                time.sleep(1)
                for sp in stack.services.values():
                    if sp.proc and sp.proc.poll() is not None:
                        say(f"{sp.name} exited ({sp.proc.returncode}); restarting")
                        sp.start()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    up()
