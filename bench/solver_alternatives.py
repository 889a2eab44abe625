"""Would a compiled small-problem solver beat Clarabel here? (pure library, one process)

The throughput target of issue #4 (1,000 accounts/s on 2 cores) leaves about 1 ms of one core
per account, and Clarabel alone takes more than that (docs/optimizer.md, "Speed"). The usual
answer for small conic problems solved many times is a solver generated for one sparsity
pattern: QOCO's code generator (`qocogen`, a custom interior point with the KKT factorization
unrolled into straight-line C), as cvxpygen uses it. QOCO takes second-order cones only, so the
3/2-power impact term becomes cvxpy's second-order-cone form of |t|^(3/2) instead of one power
cone per security.

On the accounts of `bench/optimizer.py` (20 securities x 3 lots, 4 factors, every constraint),
one core, side by side in one run, the medians over the same accounts of:

1. Clarabel as the optimizer calls it (`fastpath.py`: power cones, setup and solve apart);
2. Clarabel on the second-order-cone form (through cvxpy; the solver's own time);
3. QOCO on that form (the PyPI build, through cvxpy; the solver's own time);
4. the solver qocogen generates for that form, compiled with -O3 -march=native and run from C
   on each account's data (one account's pattern; accounts whose pattern differs are left out).

QOCO's tolerances are set to the optimizer's (1e-9) in 3 and 4; its default 1e-7 is printed too.
Needs `uv pip install --python .venv/bin/python qoco qocogen` (not project dependencies:
installed, QOCO would join cvxpy's solvers in the tests' environment) and a C compiler; the generation and the build of the
unrolled C take about two minutes. `--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cvxpy as cp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimizer import make_account  # noqa: E402  (bench/optimizer.py: the same accounts)

from trimtab.rebalance import RebalanceContext, from_snapshot  # noqa: E402
from trimtab.rebalance import problem as PR  # noqa: E402
from trimtab.rebalance import solve as S  # noqa: E402
from trimtab.rebalance.drivers import DEFAULT_DRIVER_WEIGHTS, DEFAULT_TUNING, validate_weights  # noqa: E402
from trimtab.shared.events import AccountSnapshot  # noqa: E402

TOL = 1e-9  # the optimizer's Clarabel tolerances (problem.SOLVER_OPTIONS)

DRIVER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qoco_custom.h"

static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}
static Workspace work;
int main(int argc, char **argv) {
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    int k, reps, sizes[6]; double tol;
    if (fread(&k, sizeof k, 1, in) != 1 || fread(&reps, sizeof reps, 1, in) != 1
        || fread(&tol, sizeof tol, 1, in) != 1 || fread(sizes, sizeof(int), 6, in) != 6) return 2;
    double *arrays[6] = {work.P, work.c, work.A, work.b, work.G, work.h};
    double *data = malloc(sizeof(double) * (sizes[0] + sizes[1] + sizes[2] + sizes[3] + sizes[4] + sizes[5]));
    for (int a = 0; a < k; ++a) {
        double *at = data;
        for (int j = 0; j < 6; ++j) { if (fread(at, sizeof(double), sizes[j], in) != (size_t)sizes[j]) return 3; at += sizes[j]; }
        double best = 1e30, times[64];
        for (int r = 0; r < reps; ++r) {
            load_data(&work);
            set_default_settings(&work);
            work.settings.abstol = tol; work.settings.reltol = tol;
            at = data;
            for (int j = 0; j < 6; ++j) { memcpy(arrays[j], at, sizeof(double) * sizes[j]); at += sizes[j]; }
            double t0 = now();
            qoco_custom_solve(&work);
            times[r] = now() - t0;
            if (times[r] < best) best = times[r];
        }
        /* the median of the repetitions */
        for (int i = 1; i < reps; ++i) for (int j = i; j > 0 && times[j] < times[j - 1]; --j) {
            double s = times[j]; times[j] = times[j - 1]; times[j - 1] = s; }
        double med = times[reps / 2];
        double iters = work.sol.iters, status = work.sol.status;
        fwrite(&med, sizeof med, 1, out); fwrite(&work.sol.obj, sizeof(double), 1, out);
        fwrite(&iters, sizeof iters, 1, out); fwrite(&status, sizeof status, 1, out);
    }
    fclose(out);
    return 0;
}
"""


def soc_problem(shape: PR.Shape) -> PR.CompiledProblem:
    """The optimizer's problem with |t|^(3/2) <= impact in cvxpy's second-order-cone form."""
    class _Cvxpy(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(cp, name)

    shim = _Cvxpy("cvxpy_soc")
    shim.PowCone3D = lambda impact, _ones, trade, _alpha: impact >= cp.power(cp.abs(trade), 1.5)
    original, PR.cp = PR.cp, shim
    try:
        return PR.CompiledProblem(shape)
    finally:
        PR.cp = original


def qoco_arrays(data: dict) -> list[sp.csc_matrix | np.ndarray]:
    P = sp.triu(data["P"], format="csc")
    return [P, data["c"], sp.csc_matrix(data["A"]), data["b"], sp.csc_matrix(data["G"]), data["h"]]


def _int32(m: sp.csc_matrix) -> sp.csc_matrix:
    """QOCO's Python interface wants 32-bit indices (scipy may give 64)."""
    return sp.csc_matrix((m.data, m.indices.astype(np.int32), m.indptr.astype(np.int32)), shape=m.shape)


def same_pattern(a: list[Any], b: list[Any]) -> bool:
    return all(not sp.issparse(x) or (x.shape == y.shape and np.array_equal(x.indptr, y.indptr)
                                      and np.array_equal(x.indices, y.indices)) for x, y in zip(a, b, strict=True))


def generated_solver(first: dict, workdir: Path) -> tuple[Path, float, float]:
    """qocogen's solver for `first`'s pattern, built with the driver; (binary, gen s, build s)."""
    import qocogen

    dims = first["dims"]
    P, c, A, b, G, h = qoco_arrays(first)
    q = np.array(dims.soc, dtype=np.int32)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        qocogen.generate_solver(len(c), G.shape[0], A.shape[0], first["P"], c, A, b, G, h, int(dims.nonneg),
                                len(q), q, output_dir=str(workdir), name="qoco_custom")
    gen_s = time.perf_counter() - t0
    src = workdir / "qoco_custom"
    (src / "driver.c").write_text(DRIVER_C)
    t0 = time.perf_counter()
    sources = [str(src / f) for f in ("qoco_custom.c", "cone.c", "kkt.c", "ldl.c", "utils.c", "driver.c")]
    subprocess.run(["cc", "-O3", "-march=native", "-o", str(src / "driver"), *sources, "-lm"],
                   check=True, cwd=src)
    return src / "driver", gen_s, time.perf_counter() - t0


def run_generated(binary: Path, accounts: list[list[Any]], reps: int, tol: float) -> list[tuple[float, ...]]:
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        first = accounts[0]
        sizes = [x.nnz if sp.issparse(x) else len(x) for x in first]
        with inp.open("wb") as f:
            f.write(struct.pack("iid6i", len(accounts), reps, tol, *sizes))
            for arrays in accounts:
                for x in arrays:
                    f.write(np.ascontiguousarray(x.data if sp.issparse(x) else x, dtype=np.float64).tobytes())
        subprocess.run([str(binary), str(inp), str(out)], check=True)
        raw = np.frombuffer(out.read_bytes(), dtype=np.float64).reshape(-1, 4)
    return [tuple(r) for r in raw]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=40)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each generated solve (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import qoco  # noqa: F401
        import qocogen  # noqa: F401
    except ImportError:
        # Optional: `make bench` runs every bench, and these packages are not the project's.
        print("nothing measured: needs QOCO and its code generator (uv pip install --python "
              ".venv/bin/python qoco qocogen; the next uv sync removes them)")
        return 0
    if shutil.which("cc") is None:
        print("nothing measured: needs a C compiler (cc)")
        return 0

    w = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    inps = []
    for seed in range(args.accounts):
        snap, ctx = make_account(seed, 20, 3, 4)
        inps.append(from_snapshot(AccountSnapshot.model_validate(snap), RebalanceContext.from_json(ctx)))
    shape = S.shape_of(inps[0])
    datas = [S.assemble(i, w, DEFAULT_TUNING, shape, S.Bans()) for i in inps if S.shape_of(i) == shape]
    ours = PR.compiled(shape)
    fast = ours.fast
    assert fast is not None, "no fast path"
    soc = soc_problem(shape)

    # 1. Clarabel as the optimizer calls it.
    import clarabel
    setup_ms, solve_ms, iters = [], [], []
    for d in datas:
        t1 = ours.theta(d)
        P, q, A, b = fast.P.at(t1), fast.q @ t1, fast.A.at(t1), fast.b @ t1
        t0 = time.perf_counter()
        solver = clarabel.DefaultSolver(P, q, A, b, fast.cones, fast.attempts[0])
        t_mid = time.perf_counter()
        sol = solver.solve()
        solve_ms.append((time.perf_counter() - t_mid) * 1e3)
        setup_ms.append((t_mid - t0) * 1e3)
        iters.append(sol.iterations)
    out: dict[str, Any] = {"shape": str(shape), "accounts": len(datas),
                           "power_cone_form": {"variables": fast.A.shape[1], "rows": fast.A.shape[0]}}
    out["clarabel_fast_path"] = {"setup_p50_ms": statistics.median(setup_ms),
                                 "solve_p50_ms": statistics.median(solve_ms), "iterations_p50": statistics.median(iters)}

    # 2 and 3: the second-order-cone form through cvxpy.
    qoco_data, clarabel_soc, qoco_py, qoco_py_default, values = [], [], [], [], []
    for d in datas:
        soc._set(d)  # noqa: SLF001
        data, _, _ = soc.problem.get_problem_data(cp.QOCO)
        qoco_data.append(data)
        soc.problem.solve(solver=cp.CLARABEL, **PR.SOLVER_OPTIONS["CLARABEL"])
        clarabel_soc.append((soc.problem.solver_stats.solve_time * 1e3, soc.problem.solver_stats.num_iters))
        ref = soc.problem.value
        soc.problem.solve(solver=cp.QOCO, abstol=TOL, reltol=TOL)
        qoco_py.append((soc.problem.solver_stats.solve_time * 1e3, soc.problem.solver_stats.num_iters))
        values.append(abs(soc.problem.value - ref) / max(abs(ref), 1.0))
        soc.problem.solve(solver=cp.QOCO)
        qoco_py_default.append(soc.problem.solver_stats.solve_time * 1e3)
    first = qoco_data[0]
    out["second_order_cone_form"] = {"variables": len(first["c"]), "rows": first["G"].shape[0] + first["A"].shape[0],
                                     "soc_cones": len(first["dims"].soc)}
    out["clarabel_soc"] = {"solve_p50_ms": statistics.median(t for t, _ in clarabel_soc),
                           "iterations_p50": statistics.median(i for _, i in clarabel_soc)}
    out["qoco_pypi"] = {"solve_p50_ms": statistics.median(t for t, _ in qoco_py),
                        "iterations_p50": statistics.median(i for _, i in qoco_py),
                        "solve_p50_ms_default_tol": statistics.median(qoco_py_default),
                        "objective_max_rel_diff_vs_clarabel": max(values)}

    # 4. The generated solver, on every account with the first one's pattern.
    arrays = [qoco_arrays(d) for d in qoco_data]
    matching = [i for i, a in enumerate(arrays) if same_pattern(a, arrays[0])]
    with tempfile.TemporaryDirectory(prefix="trimtab-qocogen-") as tmp:
        binary, gen_s, build_s = generated_solver(first, Path(tmp))
        got = run_generated(binary, [arrays[i] for i in matching], args.reps, TOL)
        got_default = run_generated(binary, [arrays[i] for i in matching], args.reps, 1e-7)
    # The generated solver's objective against QOCO's own on the same data (both: c'x + x'Px/2).
    import qoco as qoco_mod
    rel = []
    for i, (_, obj, _, status) in zip(matching, got, strict=True):
        P, c, A, b, G, h = arrays[i]
        dims = qoco_data[i]["dims"]
        s = qoco_mod.QOCO()
        P, A, G = (_int32(x) for x in (P, A, G))
        s.setup(len(c), G.shape[0], A.shape[0], P, c, A, b, G, h, int(dims.nonneg), len(dims.soc),
                np.array(dims.soc, dtype=np.int32), verbose=0, abstol=TOL, reltol=TOL)
        r = s.solve()
        rel.append(abs(obj - r.obj) / max(abs(r.obj), 1.0) if status == 1 else float("inf"))
    out["qocogen_compiled"] = {"accounts": len(got), "generate_s": gen_s, "build_s": build_s,
                               "solve_p50_ms": statistics.median(g[0] for g in got) * 1e3,
                               "iterations_p50": statistics.median(g[2] for g in got),
                               "solved": sum(1 for g in got if g[3] == 1),
                               "solve_p50_ms_default_tol": statistics.median(g[0] for g in got_default) * 1e3,
                               "objective_max_rel_diff_vs_qoco": max(rel)}

    cf, cs = out["clarabel_fast_path"], out["clarabel_soc"]
    qp, qg = out["qoco_pypi"], out["qocogen_compiled"]
    print(f"{shape}, {len(datas)} accounts, one core, medians")
    print(f"  power-cone form {out['power_cone_form']['variables']} variables x {out['power_cone_form']['rows']} rows; "
          f"second-order-cone form {out['second_order_cone_form']['variables']} x {out['second_order_cone_form']['rows']}")
    print(f"1. Clarabel as the optimizer calls it: setup {cf['setup_p50_ms']:.3f} ms + solve {cf['solve_p50_ms']:.3f} ms, "
          f"{cf['iterations_p50']:g} iterations")
    print(f"2. Clarabel, second-order-cone form: {cs['solve_p50_ms']:.3f} ms, {cs['iterations_p50']:g} iterations")
    print(f"3. QOCO (PyPI), second-order-cone form: {qp['solve_p50_ms']:.3f} ms, {qp['iterations_p50']:g} iterations "
          f"({qp['solve_p50_ms_default_tol']:.3f} ms at its default 1e-7); objective within "
          f"{qp['objective_max_rel_diff_vs_clarabel']:.1e} of Clarabel's")
    print(f"4. qocogen, compiled: {qg['solve_p50_ms']:.3f} ms, {qg['iterations_p50']:g} iterations "
          f"({qg['solve_p50_ms_default_tol']:.3f} ms at 1e-7), {qg['solved']}/{qg['accounts']} solved, objective "
          f"within {qg['objective_max_rel_diff_vs_qoco']:.1e} of QOCO's (generated in {gen_s:.0f} s, built in {build_s:.0f} s)")
    print(f"   compiled QOCO / Clarabel (setup + solve): {qg['solve_p50_ms'] / (cf['setup_p50_ms'] + cf['solve_p50_ms']):.2f}x")
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
