"""Where the quantization pipeline computes: moving calibration activations (and the keyword arguments a
decoder layer receives: position embeddings, masks) between devices, and picking the compute device."""

from __future__ import annotations

import torch
from torch import nn


def to_device(obj, device: torch.device):
    """`obj` with every tensor inside (nested tuples, lists, dicts) moved to `device`; other objects as is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def default_device(local_rank: int | None = None) -> torch.device:
    """cuda (the local rank's GPU under torchrun) when there is one and qtip_ops has its CUDA kernels, else
    the CPU."""
    from .._library import has_cuda_kernels

    if has_cuda_kernels():
        return torch.device("cuda", 0 if local_rank is None else local_rank % torch.cuda.device_count())
    return torch.device("cpu")
