"""Loads the compiled `qtip` op library (qtip_ops/_C*.so) into the torch dispatcher."""

from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent


def library_path() -> Path:
    """Path of the compiled op library; also what a C++ (AOTInductor) runner must load."""
    candidates = sorted(_HERE.glob("_C*.so")) + sorted(_HERE.glob("_C*.pyd"))
    if not candidates:
        raise ImportError(
            f"qtip_ops: the compiled op library (_C*.so) is missing from {_HERE}. "
            "Build it against your torch with: pip install --no-build-isolation -e ."
        )
    return candidates[0]


def load() -> None:
    if hasattr(torch.ops.qtip, "gemv") and _registered():
        return
    torch.ops.load_library(str(library_path()))


def _registered() -> bool:
    try:
        torch.ops.qtip.gemv.default
    except (AttributeError, RuntimeError):
        return False
    return True


def has_cuda_kernels() -> bool:
    """True when the library was built with CUDA kernels (and this torch can run them)."""
    return torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key("qtip::gemv", "CUDA")
