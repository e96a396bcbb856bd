"""Round-to-nearest baseline: a per-output-row uniform K-bit grid with an MSE-searched clipping range."""

from __future__ import annotations

import torch

CLIP_RATIOS = torch.linspace(0.3, 1.0, 15)


def rtn_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Dequantized weight: each row rounded to 2^bits evenly spaced levels (midrise, symmetric) over
    [-c, c], with c = ratio · max|row| and the ratio that minimises the row's squared error."""
    w = weight.detach().to(torch.float32)
    levels = 2**bits
    absmax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    best = torch.full_like(absmax, float("inf"))
    out = torch.empty_like(w)
    for ratio in CLIP_RATIOS.tolist():
        step = 2 * ratio * absmax / levels
        q = (torch.floor(w / step).clamp(-levels // 2, levels // 2 - 1) + 0.5) * step
        err = (q - w).square().sum(dim=1, keepdim=True)
        better = err < best
        best = torch.where(better, err, best)
        out = torch.where(better, q, out)
    return out.to(weight.dtype)
