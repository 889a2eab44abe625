"""`make fuzz`: schemathesis against every service's OpenAPI document, on a stack started here.

The seventh session's two fuzzing passes found 14 defects (12 kinds of 500, 5 of which corrupted
or blocked stored data); this is the harness, kept so that the next change to a route is fuzzed
the same way. It starts the six services as `make up` does (Tansu, the local PostgreSQL, a fresh
database `trimtab_fuzz`), mints a token with every scope for a fresh tenant, and runs
schemathesis (its own pinned environment through `uvx`, not the project's: installed beside the
tests its pytest plugin would load into them) on each service with the checks every Trimtab route
must pass:

- `not_a_server_error`: no 5xx for any input;
- `status_code_conformance`, `content_type_conformance`: every answer is one the OpenAPI document
  promises (errors are `application/problem+json`, 4XX/5XX documented on every route);
- `response_schema_conformance`: bodies match their documented schemas;
- `negative_data_rejection`: input the schema forbids is refused with a 4xx;
- `unsupported_method`, `allow_header_conformance`: a wrong method is a 405 naming the allowed
  ones.

`positive_data_acceptance` is left out (valid-looking requests name accounts, proposals and
records that do not exist: 404 is right), so are the stateful checks. After the run each
service's log is searched for tracebacks. Exit status 0 only if every service passed and no log
holds a traceback. `--max-examples` per operation (default 30), `--services` to pick some,
`--seed` to repeat a run; schemathesis' reports (JUnit, and a pytest file reproducing any
failure) are written under `.trimtab/fuzz/<service>/`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from trimtab_dev.stack import Stack, say

SCHEMATHESIS = "schemathesis==4.32.5"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection,unsupported_method,allow_header_conformance")
SERVICES = ("market-data", "drift-monitor", "optimizer", "risk", "explainer", "audit")


def _uvx() -> list[str]:
    if shutil.which("uvx"):
        return ["uvx"]
    if shutil.which("uv"):
        return ["uv", "tool", "run"]
    return [sys.executable, "-m", "uv", "tool", "run"]


def fuzz_service(stack: Stack, name: str, token: str, out: Path, *, max_examples: int, seed: int | None,
                 workers: int) -> tuple[int, int]:
    """(failures, errors) of schemathesis' run on `name`: failures are the API's (a check did not
    hold); errors are schemathesis' own (seen: its recursion limit on a deep schema)."""
    url = stack.url(name)
    report = out / name
    report.mkdir(parents=True, exist_ok=True)
    cmd = [*_uvx(), "--from", SCHEMATHESIS, "schemathesis", "run", f"{url}/v1/openapi.json",
           "--url", url, "--header", f"Authorization: Bearer {token}", "--checks", CHECKS,
           "--max-examples", str(max_examples), "--workers", str(workers), "--no-color",
           "--report", "junit,pytest", "--report-dir", str(report), "--request-timeout", "60",
           "--suppress-health-check", "all", "--generation-database", "none"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    say(f"fuzzing {name}: {url}/v1/openapi.json ({max_examples} examples per operation)")
    with (report / "schemathesis.log").open("w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    tail = (report / "schemathesis.log").read_text().strip().splitlines()[-12:]
    for line in tail:
        print(f"    {line}")
    junit = sorted(report.glob("junit*.xml"))
    if not junit:  # no report: the run itself failed
        return (0, 1) if rc else (0, 0)
    head = re.search(r"<testsuites ([^>]*)>", junit[-1].read_text())
    counts = dict(re.findall(r'(\w+)="(\d+)"', head.group(1))) if head else {}
    return int(counts.get("failures", 0)), int(counts.get("errors", 0))


def log_sizes(stack: Stack) -> dict[str, int]:
    return {sp.name: sp.log_path.stat().st_size if sp.log_path.exists() else 0 for sp in stack.services.values()}


def tracebacks(stack: Stack, since: dict[str, int]) -> dict[str, int]:
    """Tracebacks each service logged after `since` (the logs are appended to across runs)."""
    out = {}
    for sp in stack.services.values():
        if sp.log_path.exists():
            with sp.log_path.open("rb") as f:
                f.seek(since.get(sp.name, 0))
                n = f.read().decode(errors="replace").count("Traceback (most recent call last)")
            if n:
                out[sp.name] = n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default=",".join(SERVICES), help="comma-separated (default: all six)")
    ap.add_argument("--max-examples", type=int, default=30, help="test cases per operation")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    names = [s for s in a.services.split(",") if s]
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        ap.error(f"unknown services {unknown}; known: {', '.join(SERVICES)}")
    from trimtab.shared.auth import mint_token
    from trimtab.shared.config import ServiceSettings

    out = Path(".trimtab/fuzz")
    shutil.rmtree(out, ignore_errors=True)
    tenant = f"fuzz-{uuid.uuid4().hex[:6]}"
    token = mint_token(ServiceSettings(), subject="fuzzer@trimtab", tenant_id=tenant, ttl_s=6 * 3600)
    results: dict[str, tuple[int, int]] = {}
    with Stack(database_name="trimtab_fuzz") as stack:
        before = log_sizes(stack)
        for name in names:
            results[name] = fuzz_service(stack, name, token, out, max_examples=a.max_examples, seed=a.seed,
                                         workers=a.workers)
        crashed = tracebacks(stack, before)
    say("fuzzing summary:")
    for name, (failures, errors) in results.items():
        say(f"  {name:14s} {'passed' if not failures else f'FAILED: {failures} check(s) did not hold'}"
            f"{f', {errors} schemathesis error(s) (its own, not a response)' if errors else ''}"
            f"{f', {crashed[name]} traceback(s) in its log' if name in crashed else ''}")
    ok = not any(f for f, _ in results.values()) and not crashed
    say(f"reports: {out}/<service>/ (schemathesis.log, junit.xml, a pytest file reproducing failures)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
