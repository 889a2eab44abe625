"""Does a proposal depend on the BLAS kernel? The benchmark accounts proposed under each OpenBLAS
kernel this CPU runs, in one subprocess each (OpenBLAS reads `OPENBLAS_CORETYPE` when numpy
loads), compared proposal by proposal with the default kernel's.

Why it matters: a replay is bit-identical only on the same kernel, which is why the replayed
services run a pinned one (`trimtab.shared.numeric`, docs/audit.md "Replay"). The accounts are
`bench/optimizer.py`'s (20 securities x 3 lots, every constraint), as many again with wash
groups of three securities sharing a substitute group, and as many with two substitute groups of
four and household trades of the last 30 days. Each proposal is its `RebalanceProposed`
event as a replay compares it, without the kernel's name. Prints, per kernel: the name OpenBLAS gives
it, how many proposals differ from the default kernel's (and which fields), and `propose`'s
milliseconds per account on one core (fastest of two passes). The comparison is the audit
replay's own (`trimtab.audit.replay`): the fields listed are those a replay would name.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Kernel -> the CPU flags it needs (x86-64: Prescott runs everywhere).
KERNELS = {"SkylakeX": {"avx512f"}, "Haswell": {"avx2", "fma"}, "Sandybridge": {"avx"}, "Prescott": set()}


def _accounts(n: int) -> list[tuple[dict, dict]]:
    import optimizer as bench

    out = [bench.make_account(s, 20, 3, 4) for s in range(n)]
    for s in range(n):
        snap, ctx = bench.make_account(5000 + s, 12, 2, 3)
        for i, info in enumerate(ctx["securities"].values()):
            info.pop("substitute_group", None)
            if i < 9:
                info["wash_group"] = info["substitute_group"] = f"W{i // 3}"
        out.append((snap, ctx))
    for s in range(n):
        snap, ctx = bench.make_account(7000 + s, 15, 3, 2)
        for i, info in enumerate(ctx["securities"].values()):
            if i < 8:
                info["substitute_group"] = f"G{i % 2}"  # two substitute groups of four
        ctx["recent_trades"] = [{"account_id": "ira", "symbol": sym, "side": "buy" if j % 2 else "sell",
                                 "trade_date": "2025-03-01"} for j, sym in enumerate(list(ctx["securities"])[:10])]
        out.append((snap, ctx))
    return out


def _worker(n: int) -> None:
    """In the subprocess: one line of JSON, the proposals' records and the timing."""
    from trimtab.audit.replay import PROPOSAL_RUN_DEPENDENT, comparable
    from trimtab.rebalance import RebalanceContext, RebalanceError, propose
    from trimtab.shared.events import AccountSnapshot
    from trimtab.shared.numeric import blas_core

    pairs = [(AccountSnapshot.model_validate(s), RebalanceContext.from_json(c)) for s, c in _accounts(n)]
    records: list[dict] = []
    solved = []
    for snap, ctx in pairs:
        try:
            event = propose(snap, context=ctx).to_event()
        except RebalanceError as e:  # an answer too (infeasible): it must not differ either
            records.append({"error": f"{type(e).__name__}: {e}"})
            continue
        solved.append((snap, ctx))
        # What the audit's replay compares (not the solve time), less the kernel's name itself.
        d = comparable(event, PROPOSAL_RUN_DEPENDENT)
        d["solver"].pop("blas_core", None)
        records.append(d)
    passes = []
    for _ in range(2):
        t0 = time.process_time()
        for snap, ctx in solved:
            propose(snap, context=ctx)
        passes.append((time.process_time() - t0) / len(solved) * 1e3)
    print(json.dumps({"core": blas_core(), "records": records, "propose_ms": min(passes)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=300, help="accounts of each of the three families")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    from trimtab.audit.replay import compare

    if a.worker is not None:
        _worker(a.worker)
        return 0
    if os.uname().machine not in ("x86_64", "AMD64"):
        print("OpenBLAS's kernel names here are x86-64's: nothing to compare on", os.uname().machine)
        return 0
    flags = set(next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), []))
    runs: dict[str, dict] = {}
    for kernel in ["default", *(k for k, need in KERNELS.items() if need <= flags)]:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        env.pop("OPENBLAS_CORETYPE", None)
        if kernel != "default":
            env["OPENBLAS_CORETYPE"] = kernel
        done = subprocess.run([sys.executable, __file__, "--worker", str(a.accounts)], env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise SystemExit(f"the {kernel} run failed:\n{done.stderr[-2000:]}")
        runs[kernel] = json.loads(done.stdout.strip().splitlines()[-1])
    base = runs["default"]["records"]
    total = len(base)
    print(f"{total} proposals ({a.accounts} of each family), each kernel "
          f"against this CPU's default ({runs['default']['core']}):")
    figures: dict[str, object] = {"proposals": total, "default_core": runs["default"]["core"]}
    for kernel, run in runs.items():
        differ = [i for i, (x, y) in enumerate(zip(base, run["records"], strict=True)) if x != y]
        # The fields a replay on this kernel would name (the audit's own comparison).
        fields = sorted({line.split(":", 1)[0] for i in differ for line in compare("", base[i], run["records"][i])})
        print(f"   {kernel:12s} ({run['core']}): {len(differ)} differ"
              f"{' in ' + ', '.join(fields) if fields else ''}; propose {run['propose_ms']:.3f} ms an account")
        figures[kernel] = {"core": run["core"], "differ": len(differ), "fields": fields,
                           "propose_ms": round(run["propose_ms"], 3),
                           "digests": hashlib.sha256(json.dumps(run["records"]).encode()).hexdigest()[:12]}
    if a.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
