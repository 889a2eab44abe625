"""Where one account's instructions go: the optimizer's `propose` counted by callgrind.

Instructions, unlike seconds, do not depend on how fast the shared machine is that day, so this
is the figure to compare across sessions (docs/optimizer.md, "Speed"). Two runs of the same child
process under `valgrind --tool=callgrind` (PYTHONHASHSEED=0): one proposes `--accounts` benchmark
accounts (`bench/optimizer.py`'s, 20 securities x 3 lots, every constraint), the other none; the
difference, per account, split by the shared object the instructions ran in (Clarabel, the
Python interpreter, numpy, ...). The count covers synthesizing and parsing each account as well
as `propose`. Needs valgrind (Debian's package); takes a few minutes (valgrind runs Python about
50x slower; the two runs go in parallel).

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(n: int) -> None:
    sys.path.insert(0, str(HERE))
    import optimizer as bench  # bench/optimizer.py: the throughput benchmark's accounts

    from trimtab.rebalance import RebalanceContext, propose
    from trimtab.shared.events import AccountSnapshot

    data = [bench.make_account(s, 20, 3, 4) for s in range(max(n, 1))]
    parsed = [(AccountSnapshot.model_validate(s), RebalanceContext.from_json(c)) for s, c in data]
    propose(parsed[0][0], context=parsed[0][1])  # compile the shape in both runs
    for snap, ctx in parsed[:n]:
        propose(snap, context=ctx)


_LINE = re.compile(r"^\s*([\d,]+) \(.*\[(.+)\]\s*$")


def by_object(out_file: Path) -> dict[str, int]:
    """Instructions per shared object, from callgrind_annotate's per-function lines."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(out_file)], check=True,
                          capture_output=True, text=True).stdout
    totals: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            obj = Path(m.group(2).split()[0]).name
            totals[obj] = totals.get(obj, 0) + int(m.group(1).replace(",", ""))
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        child(a.child)
        return 0
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        print("valgrind is not installed (apt-get install valgrind): nothing measured", file=sys.stderr)
        return 1
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {n: Path(tmp) / f"cg.{n}" for n in (0, a.accounts)}
        procs = [subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={path}",
                                   sys.executable, __file__, "--child", str(n)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n, path in outs.items()]
        if any(p.wait() != 0 for p in procs):
            print("a callgrind run failed", file=sys.stderr)
            return 1
        base, full = by_object(outs[0]), by_object(outs[a.accounts])
    per = {o: (full.get(o, 0) - base.get(o, 0)) / a.accounts for o in set(base) | set(full)}
    total = sum(per.values())
    rows = sorted(((v, o) for o, v in per.items() if v > 0), reverse=True)
    print(f"instructions per account ({a.accounts} accounts, 20 x 3, every constraint): {total / 1e6:.1f}M")
    for v, o in rows[:8]:
        print(f"  {v / 1e6:6.2f}M  {100 * v / total:5.1f} %  {o}")
    if a.json:
        print(json.dumps({"accounts": a.accounts, "instructions_per_account": round(total),
                          "by_object": {o: round(v) for v, o in rows[:8]}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
