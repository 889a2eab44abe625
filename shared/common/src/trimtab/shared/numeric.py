"""The numeric platform a decision is computed on, pinned so that a replay reproduces it.

A proposal's bits depend on the BLAS kernels numpy calls: OpenBLAS picks one per CPU at load
time (SkylakeX on an AVX-512 machine, Haswell with AVX2 and FMA, older ones elsewhere), and they
add a dot product's terms in different orders, some with fused multiply-adds.
`bench/blas_kernels.py` proposes 900 accounts (three families of the benchmark's) under each
kernel a CPU runs: on this AVX-512 machine (default SkylakeX) the Haswell kernel changed 1 of them
(the objective's 10th decimal), the Sandybridge and Prescott kernels 3 (in one, the orders, the
estimated tax and the solver that answered). So a decision recorded on one CPU could replay differently on another under the
same optimizer version. numpy's own SIMD dispatch was checked too (its x86-64-v3 and v4 loops
disabled): no proposal changed.

The processes whose outputs are replayed (the optimizer, the explainer, the audit service that
replays them) therefore run with `PINNED_BLAS` in their environment: OpenBLAS's Prescott kernel,
which every x86-64 CPU runs and which uses no fused multiply-add, on one thread (a threaded
product splits its sums by the thread count). Their problems are small (a 20 x 3 account's
matrices, 512 x 24 at most), where the kernel's speed does not show beyond the machine's noise:
`propose` took 1.66-1.82 ms an account on every kernel in two `bench/blas_kernels.py` runs. An explicit value in
the environment wins (an operator may choose another kernel for a whole fleet). OpenBLAS reads
these once, when numpy is first imported, so they are set by whatever starts the process (the
local stack, docker-compose): `blas_core()` tells what a process actually runs, each service logs
it at start, and a proposal records it (`SolverInfo.blas_core`) for the replay to compare.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
from collections.abc import Mapping
from functools import cache

#: The environment that pins OpenBLAS (x86-64; other architectures keep their default kernel).
PINNED_BLAS: dict[str, str] = {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1"}

#: What `blas_core()` reports for the pinned kernel: x86-64 builds of OpenBLAS alias the Katmai
#: table to Prescott's and name it by the first alias.
PINNED_CORE_NAMES = frozenset({"Prescott", "Katmai"})

#: The services whose outputs a replay must reproduce bit for bit.
REPLAYED_SERVICES = frozenset({"optimizer", "explainer", "audit"})


def pinned_environment(env: Mapping[str, str], machine: str | None = None) -> dict[str, str]:
    """`env` with `PINNED_BLAS` added where it sets nothing of its own (x86-64 only: the kernel
    names are the architecture's)."""
    out = dict(env)
    if (machine or platform.machine()).lower() in ("x86_64", "amd64"):
        for key, value in PINNED_BLAS.items():
            out.setdefault(key, value)
    return out


def service_environment(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment to start `service` with: pinned if its outputs are replayed."""
    return pinned_environment(env) if service in REPLAYED_SERVICES else dict(env)


@cache
def blas_core() -> str | None:
    """The OpenBLAS kernel this process's numpy runs ("Prescott", "SkylakeX"...), or None when
    numpy's BLAS is not a recognizable OpenBLAS."""
    import numpy as np

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            get = getattr(lib, symbol, None)
            if get is not None:
                get.restype = ctypes.c_char_p
                name = get()
                return name.decode() if name else None
    return None
