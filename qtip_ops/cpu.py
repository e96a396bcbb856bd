"""Which CPU kernels run: the AVX2 ones (where the CPU has AVX2, FMA and F16C) or the portable scalar ones.

Both give bit-identical results; the switch exists for tests and for comparing speed. The environment
variable QTIP_FORCE_SCALAR=1 also forces the scalar kernels (read at every call).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

from . import _library


@lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    # The same shared object torch.ops.load_library opened: dlopen returns the same handle, hence the same
    # global path setting.
    lib = ctypes.CDLL(str(_library.library_path()))
    lib.qtip_set_cpu_path.argtypes = [ctypes.c_int]
    lib.qtip_set_cpu_path.restype = ctypes.c_int
    lib.qtip_cpu_path_is_avx2.restype = ctypes.c_int
    return lib


def set_cpu_path(path: str) -> str:
    """"scalar" forces the portable kernels, "auto" uses AVX2 where available. Returns the previous setting."""
    if path not in ("auto", "scalar"):
        raise ValueError(f"cpu path must be 'auto' or 'scalar', got {path!r}")
    previous = _lib().qtip_set_cpu_path(1 if path == "scalar" else 0)
    return "scalar" if previous == 1 else "auto"


def cpu_path() -> str:
    """The kernels the next call will run: "avx2" or "scalar"."""
    return "avx2" if _lib().qtip_cpu_path_is_avx2() else "scalar"
