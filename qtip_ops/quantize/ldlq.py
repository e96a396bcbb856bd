"""BlockLDLQ (QuIP#/QTIP): quantize 16-column blocks from last to first, feeding each block the error of
the blocks already quantized through the block LDL factor of the Hessian, so that the proxy loss
tr(ΔHΔᵀ) decomposes into independent per-block trellis quantization errors."""

from __future__ import annotations

from typing import Callable

import torch

from ..layout import TILE


def block_ldl(hessian: torch.Tensor, block: int = TILE) -> torch.Tensor:
    """A = L - I for H = L D Lᵀ with L unit block-lower-triangular (blocks of `block`), in float64.

    From the Cholesky factor C (H = C Cᵀ): L = C · blockdiag(C_kk)⁻¹ and D = blockdiag(C_kk C_kkᵀ)."""
    h = hessian.to(torch.float64)
    n = h.shape[0]
    if n % block:
        raise ValueError(f"Hessian size {n} is not a multiple of the block size {block}")
    chol, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        raise ValueError(f"Hessian is not positive definite (Cholesky failed at column {info.item()}); "
                         "increase damping")
    blocks = chol.view(n // block, block, n // block, block).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    eye = torch.eye(block, dtype=h.dtype, device=h.device)
    inv_diag = torch.linalg.solve_triangular(blocks, eye.expand_as(blocks), upper=False)
    unit = chol.view(n, n // block, block).permute(1, 0, 2) @ inv_diag  # (blocks, n, block): C[:, k] C_kk⁻¹
    unit = unit.view(n // block, n // block, block, block)  # [k, i]: block (i, k) of L
    diag = torch.arange(n // block, device=h.device)
    unit[diag, diag] = eye  # exact, not ~1e-17 off
    lower = unit.view(n // block, n // block, block, block).permute(1, 2, 0, 3).reshape(n, n)
    return lower - torch.eye(n, dtype=h.dtype, device=h.device)


# quantize_block(targets (m, 16)) -> (packed (m/16, words), reconstruction (m, 16))
BlockQuantizer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def block_ldlq(weight: torch.Tensor, hessian: torch.Tensor, quantize_block: BlockQuantizer,
               block: int = TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantizes weight (m, n) against hessian (n, n). Returns the packed tiles in gemv's row-major tile
    order ((m/16)·(n/16), words) and the dense reconstruction (m, n), on the weight's device (the Hessian
    is moved there). Memory: a few (m, n) and (n, n) float64 buffers, nothing per block beyond one update."""
    m, n = weight.shape
    a = block_ldl(hessian.to(weight.device), block)
    w = weight.to(torch.float64)
    recon = torch.zeros_like(w)
    packed_blocks = [None] * (n // block)
    for k in reversed(range(n // block)):
        cols = slice(k * block, (k + 1) * block)
        later = slice((k + 1) * block, n)
        target = w[:, cols] + (w[:, later] - recon[:, later]) @ a[later, cols]
        packed_blocks[k], q = quantize_block(target.to(torch.float32))
        recon[:, cols] = q.to(torch.float64)
    # packed_blocks[k] holds tiles (i, k) for i < m/16; gemv stores tile (i, k) at row i·(n/16) + k.
    packed = torch.stack(packed_blocks, dim=1).reshape(-1, packed_blocks[0].shape[-1])
    return packed, recon


def proxy_error(weight: torch.Tensor, recon: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr(ΔHΔᵀ) / tr(WHWᵀ), Δ = W - Ŵ."""
    w = weight.to(torch.float64)
    delta = w - recon.to(torch.float64)
    h = hessian.to(torch.float64)
    return (torch.einsum("ij,jk,ik->", delta, h, delta) / torch.einsum("ij,jk,ik->", w, h, w)).item()
