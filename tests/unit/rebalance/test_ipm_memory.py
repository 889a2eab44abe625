"""The structured solver's C code runs inside the optimizer's and the explainer's processes: an
out-of-bounds write there would corrupt them silently. Built with AddressSanitizer and run on 300
random problems of every shape it takes (4 to 128 securities, 1 to 8 lot slots, 0 to 8 factor
columns, 0 to 4 groups, caps and rows on and off), it must make no invalid access, whatever the
status it ends in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from trimtab.rebalance import ipm

FUZZ = textwrap.dedent('''
    import ctypes, sys
    import numpy as np
    lib = ctypes.CDLL(sys.argv[1])
    f = lib.ipm_solve
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_double, ctypes.c_double,
                                                                 ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_int]
    rng = np.random.default_rng(7)
    seen = {}
    for _ in range(300):
        n = int(rng.choice([4, 8, 12, 20, 32, 64, 128])); k = int(rng.choice([1, 2, 3, 4, 6, 8]))
        fc = int(rng.choice([0, 4, 8])); g = int(rng.choice([0, 2, 4])); m = n * k
        def v(size, lo, hi, zero=0.3):
            x = rng.uniform(lo, hi, size); x[rng.random(size) < zero] = 0; return x
        parts = [v(n, 0.1, 2, 0), v(n, -0.01, 0.01, 0), v(n, -0.05, 0, 0), v(n, -0.05, 0, 0), v(m, -1e-3, 1e-3, 0),
                 v(n, 0, 1e-3, 0), v(n, 0, 1e-3, 0), v(m, 0, 1e-3, 0), v(m, 0, 0.05), v(n, 0, 0.05), v(n, 0, 1e-3),
                 v(m, -0.2, 0.2), v(m, -0.3, 0.3), rng.normal(0, 0.1, n * fc), rng.normal(0, 0.01, fc),
                 (rng.random(n * g) < 0.2).astype(float), v(g, -0.05, 0, 0), v(g, -0.05, 0, 0)]
        scalars = [1e-3, 1e-4, rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.05), rng.uniform(0.05, 2),
                   rng.choice([10.0, rng.uniform(-0.01, 0.02)]), rng.choice([10.0, rng.uniform(0, 0.05)])]
        buf = np.ascontiguousarray(np.concatenate(parts + [np.array(scalars, dtype=float)]))
        buy, sell, info = np.empty(n), np.empty(m), np.zeros(8)
        st = f(n, k, fc, g, buf.ctypes.data, buy.ctypes.data, sell.ctypes.data, info.ctypes.data,
               *ipm_options)
        seen[st] = seen.get(st, 0) + 1
    print("statuses", sorted(seen.items()))
''')


def test_the_solver_makes_no_invalid_memory_access(tmp_path: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc is not None, "no C compiler"
    asan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert asan and Path(asan).exists(), f"no AddressSanitizer runtime for {cc} (libasan): {asan!r}"
    lib = tmp_path / "ipm_asan.so"
    subprocess.run([cc, "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-shared", "-fPIC",
                    "-o", str(lib), str(ipm.SOURCE), "-lm"], check=True, capture_output=True, text=True)
    script = tmp_path / "fuzz.py"
    script.write_text(f"ipm_options = {ipm.OPTIONS!r}\n" + FUZZ)
    run = subprocess.run([sys.executable, str(script), str(lib)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0"})
    assert run.returncode == 0 and "ERROR: AddressSanitizer" not in run.stderr, run.stderr[-4000:]
    assert "statuses" in run.stdout and "(0, " in run.stdout, run.stdout  # most of them solved
