"""Quantize one dense matrix into the packed tile layout of `qtip::gemv` (no Hessian, no RHT: plain MSE)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .codes import code_rms, default_hyb_tlut, random_lut
from .layout import dense_to_sequences, sequences_to_dense
from .ops import decode_weight, gemv, viterbi_quantize

DEFAULT_V = {"hyb": 2, "lut": 2, "1mad": 1, "2mad": 1, "3inst": 1}


def default_tlut(mode: str, L: int, V: int) -> torch.Tensor | None:
    """The codebook a mode uses unless told otherwise: k-means HYB table, Gaussian LUT, none for computed codes."""
    if mode == "hyb":
        return default_hyb_tlut()
    if mode == "lut":
        return random_lut(L, V)
    return None


@dataclass
class QuantizedMatrix:
    """A (m, n) weight as packed trellis tiles; W ~= scale * decode(packed)."""

    packed: torch.Tensor
    scale: float
    m: int
    n: int
    L: int
    K: int
    V: int
    mode: str
    tlut: torch.Tensor | None

    def code_args(self):
        return self.m, self.n, self.L, self.K, self.V, self.mode, self.tlut

    def dense(self) -> torch.Tensor:
        return decode_weight(self.packed, *self.code_args()) * self.scale

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W^T through the fused qtip::gemv."""
        return gemv(x, self.packed, *self.code_args()) * self.scale


def quantize_matrix(
    weight: torch.Tensor,
    K: int = 2,
    mode: str = "hyb",
    L: int = 16,
    V: int | None = None,
    tlut: torch.Tensor | None = None,
    batch: int = 1024,
) -> tuple[QuantizedMatrix, torch.Tensor]:
    """Trellis-quantizes `weight` (m, n) tile by tile, after scaling it to the code's RMS (as the reference
    pipeline does). Returns the quantized matrix and its reconstruction (m, n) float32."""
    V = DEFAULT_V[mode] if V is None else V
    if tlut is None:
        tlut = default_tlut(mode, L, V)
    m, n = weight.shape
    w = weight.detach().to(torch.float32)
    scale = (w.square().mean().sqrt() / code_rms(mode, L, V, tlut)).item()
    if scale == 0.0:
        scale = 1.0
    sequences = dense_to_sequences(w) / scale
    parts = [viterbi_quantize(sequences[i : i + batch], L, K, V, mode, tlut) for i in range(0, len(sequences), batch)]
    packed = torch.cat([p for p, _ in parts])
    recon = sequences_to_dense(torch.cat([r for _, r in parts]), m, n) * scale
    return QuantizedMatrix(packed, scale, m, n, L, K, V, mode, tlut), recon
