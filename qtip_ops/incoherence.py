"""Incoherence processing (SPEC §4): random signs plus randomized Hadamard transforms on both sides.

    Wr = Had_mᵀ · diag(SV) · W · diag(SU) · Had_n,      H̃ = Had_nᵀ · diag(SU) · H · diag(SU) · Had_n

so that x W^T = (x SU Had_n) Wrᵀ (Had_mᵀ SV) and the proxy loss tr(ΔHΔᵀ) is the same in both bases.
"""

from __future__ import annotations

import torch

from .ops import rht


def random_signs(n: int, generator: torch.Generator) -> torch.Tensor:
    """±1 vector (a zero draw counts as +1, like the reference's sign(sign(randn) + 1e-5))."""
    return torch.where(torch.randn(n, generator=generator) >= 0, 1.0, -1.0)


def right_had(a: torch.Tensor) -> torch.Tensor:
    """a · Had_n along the last dim."""
    return rht(a.contiguous(), None, False)


def rotate_weight(weight: torch.Tensor, su: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
    a = sv.to(weight.dtype)[:, None] * weight * su.to(weight.dtype)[None, :]
    return right_had(right_had(a).T).T  # Had_mᵀ · a · Had_n


def unrotate_weight(rotated: torch.Tensor, su: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
    """Inverse of rotate_weight: diag(SV) · Had_m · Wr · Had_nᵀ · diag(SU)."""
    b = rht(rotated.contiguous(), None, True)  # Wr · Had_nᵀ
    b = rht(b.T.contiguous(), None, True).T  # Had_m · (...)
    return sv.to(b.dtype)[:, None] * b * su.to(b.dtype)[None, :]


def rotate_hessian(hessian: torch.Tensor, su: torch.Tensor) -> torch.Tensor:
    a = su.to(hessian.dtype)[:, None] * hessian * su.to(hessian.dtype)[None, :]
    return right_had(right_had(a).T).T


def damp(hessian: torch.Tensor, relative: float = 0.01) -> torch.Tensor:
    """H + relative · mean(diag H) · I: the reference's regularisation (divide by the mean diagonal, add
    relative · I, multiply back)."""
    mean_diag = hessian.diagonal().mean()
    if not torch.isfinite(mean_diag) or mean_diag <= 0:
        mean_diag = torch.ones((), dtype=hessian.dtype, device=hessian.device)
    return hessian + relative * mean_diag * torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
