"""Which CPU kernels run: AVX-512 (F, BW, VL, VBMI, VBMI2), AVX2 (+FMA, F16C) or the portable scalar ones.

Every level gives bit-identical results; the switch exists for tests and for comparing speed. By default each
op runs the best kernel the CPU supports; a lower path caps them (an op without a kernel at the allowed level
runs its best one below it). The environment variable QTIP_CPU_PATH=scalar|avx2|avx512|auto caps them too, as
does the older QTIP_FORCE_SCALAR=1; both are read at every call.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

from . import _library

PATHS = ("scalar", "avx2", "avx512")  # in the order of the C levels 1, 2, 3
_LEVEL = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}


@lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    # The same shared object torch.ops.load_library opened: dlopen returns the same handle, hence the same
    # global path setting.
    lib = ctypes.CDLL(str(_library.library_path()))
    lib.qtip_set_cpu_path.argtypes = [ctypes.c_int]
    lib.qtip_set_cpu_path.restype = ctypes.c_int
    lib.qtip_cpu_level.restype = ctypes.c_int
    lib.qtip_cpu_allowed_level.restype = ctypes.c_int
    return lib


def _name(level: int) -> str:
    return "auto" if level == 0 else PATHS[level - 1]


def available_cpu_paths() -> list[str]:
    """The paths this CPU can run and the environment allows, fastest first, e.g. ["avx512", "avx2", "scalar"]."""
    return list(reversed(PATHS[: _lib().qtip_cpu_allowed_level()]))


def set_cpu_path(path: str) -> str:
    """Caps the CPU kernels at `path` ("scalar", "avx2", "avx512") or lifts the cap ("auto").

    Returns the previous setting. A path this CPU cannot run, or the environment caps, raises ValueError."""
    if path not in _LEVEL:
        raise ValueError(f"cpu path must be one of {sorted(_LEVEL)}, got {path!r}")
    if path != "auto" and path not in available_cpu_paths():
        raise ValueError(f"cpu path {path!r} is not available (this CPU, capped by QTIP_CPU_PATH or "
                         f"QTIP_FORCE_SCALAR, runs {available_cpu_paths()})")
    return _name(_lib().qtip_set_cpu_path(_LEVEL[path]))


def cpu_path() -> str:
    """The kernels the next call will run at most: "avx512", "avx2" or "scalar"."""
    return _name(_lib().qtip_cpu_level())
