"""QTIPLinear: a linear layer whose weight is a QTIP trellis-coded matrix.

The stored weight is Ŵ (m x n, packed tiles, see layout.py) in the randomized-Hadamard basis; the layer
computes y = x W^T with the equivalent dense weight (SPEC §4)

    W = diag(SV) · Had_m · Ŵ · Had_nᵀ · diag(SU),

as rht -> gemv -> rht: x' = rht(x, SU) / 32, y' = gemv(x', Ŵ), y = rht_T(y') · 32 SV. SV includes the
quantization scale; the 1/32 and 32 factors cancel and keep half-precision activations in range.
"""

from __future__ import annotations

import torch
from torch import nn

from .codes import check_code
from .layout import TILE
from .ops import decode_weight, gemv, rht
from .incoherence import unrotate_weight

# Activation scale of the reference's forward pass (cancels out; see module docstring).
ACTIVATION_SCALE = 32.0


class QTIPLinear(nn.Module):
    """y = x W^T (+ bias) with W stored as a packed QTIP trellis; any batch shape; compile/export friendly.

    `dtype` is the storage dtype of SU, SV and bias (fp16 like the reference checkpoints); the forward pass
    computes in fp32 and returns the input's dtype."""

    def __init__(self, in_features: int, out_features: int, L: int = 16, K: int = 2, V: int = 2, mode: str = "hyb",
                 tlut_shape: tuple[int, int] | None = (512, 2), bias: bool = False, device=None,
                 dtype: torch.dtype = torch.float16):
        super().__init__()
        if in_features % TILE or out_features % TILE:
            raise ValueError(f"QTIPLinear needs in/out features that are multiples of {TILE}, got "
                             f"({out_features}, {in_features})")
        check_code(L, K, V, mode, None if tlut_shape is None else torch.empty(tlut_shape, device="meta"))
        self.in_features, self.out_features = in_features, out_features
        self.L, self.K, self.V, self.mode = L, K, V, mode
        tiles = (out_features // TILE) * (in_features // TILE)
        self.register_buffer("trellis", torch.zeros(tiles, TILE * K, dtype=torch.int16, device=device))
        self.register_buffer("SU", torch.ones(in_features, dtype=dtype, device=device))
        self.register_buffer("SV", torch.ones(out_features, dtype=dtype, device=device))
        self.register_buffer("tlut", None if tlut_shape is None else torch.zeros(tlut_shape, dtype=torch.float16,
                                                                                    device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, L={self.L}, K={self.K}, "
                f"V={self.V}, mode={self.mode!r}, bias={self.bias is not None}")

    def code_args(self):
        return self.L, self.K, self.V, self.mode, self.tlut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = rht(x.to(torch.float32), self.SU.to(torch.float32), False, 1.0 / ACTIVATION_SCALE)
        h = gemv(h, self.trellis, self.out_features, self.in_features, *self.code_args())
        y = rht(h, None, True, 1.0) * (self.SV.to(torch.float32) * ACTIVATION_SCALE)
        if self.bias is not None:
            y = y + self.bias.to(torch.float32)
        return y.to(x.dtype)

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The (out, in) float32 weight this layer multiplies by: diag(SV) Had_m Ŵ Had_nᵀ diag(SU)."""
        w_hat = decode_weight(self.trellis, self.out_features, self.in_features, *self.code_args())
        return unrotate_weight(w_hat, self.SU.float(), self.SV.float())
