"""Quantize one linear layer against its input Hessian: incoherence processing, scaling to the code's RMS,
BlockLDLQ with tail-biting Viterbi on each 16x16 tile, then a QTIPLinear."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..codes import code_rms
from ..layout import dense_to_sequences, sequences_to_dense
from ..nn import QTIPLinear
from ..ops import viterbi_quantize
from ..quantize_matrix import DEFAULT_V, default_tlut
from ..incoherence import damp, random_signs, rotate_hessian, rotate_weight, unrotate_weight
from .ldlq import block_ldlq, proxy_error


@dataclass
class CodeConfig:
    """Trellis code and quantization knobs (defaults follow the paper: L=16, HYB V=2 with Q=9)."""

    K: int = 2
    L: int = 16
    mode: str = "hyb"
    V: int | None = None  # None: 2 for hyb/lut, 1 for the computed codes
    damping: float = 0.01
    # Targets are scaled to RMS(code) · scale_override (the reference's example uses 0.9: LDLQ's feedback
    # widens the distribution the trellis sees, so a slightly narrower target loses less to the tails).
    scale_override: float = 0.9
    tlut: torch.Tensor | None = field(default=None, repr=False)
    _tlut_on: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device -> tlut copy

    def __post_init__(self):
        if self.V is None:
            self.V = DEFAULT_V[self.mode]
        if self.tlut is None:
            self.tlut = default_tlut(self.mode, self.L, self.V)

    def rms(self) -> float:
        return code_rms(self.mode, self.L, self.V, self.tlut)

    def tlut_on(self, device: torch.device) -> torch.Tensor | None:
        """The tlut on `device`, copied there once (BlockLDLQ calls Viterbi once per 16-column block)."""
        if self.tlut is None or self.tlut.device == device:
            return self.tlut
        key = str(device)
        if key not in self._tlut_on:
            self._tlut_on[key] = self.tlut.to(device)
        return self._tlut_on[key]

    def quantize_block(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, 16) targets -> (packed tiles (m/16, 16K), reconstruction (m, 16))."""
        m, cols = target.shape
        sequences = dense_to_sequences(target)
        tlut = self.tlut_on(target.device)
        packed, recon = viterbi_quantize(sequences, self.L, self.K, self.V, self.mode, tlut)
        return packed, sequences_to_dense(recon, m, cols)


@dataclass
class QuantizedWeight:
    packed: torch.Tensor
    su: torch.Tensor
    sv: torch.Tensor  # includes the scale
    recon: torch.Tensor  # the dense weight the layer will compute with, in the original basis
    proxy_error: float


def quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, code: CodeConfig, seed: int = 0,
                    incoherence: bool = True) -> QuantizedWeight:
    """Quantizes weight (m, n) against the input Hessian (n, n). incoherence=False skips the signs and the
    Hadamard transforms (for ablations: the result then has no QTIPLinear form)."""
    m, n = weight.shape
    device = weight.device  # everything runs where the weight is (GPU when the model is there)
    w = weight.detach().to(torch.float64)
    h = damp(hessian.to(device=device, dtype=torch.float64), code.damping)
    gen = torch.Generator().manual_seed(seed)  # signs drawn on the CPU: the same on every device
    if incoherence:
        su, sv = random_signs(n, gen).double().to(device), random_signs(m, gen).double().to(device)
        wr, hr = rotate_weight(w, su, sv), rotate_hessian(h, su)
    else:
        su = torch.ones(n, dtype=torch.float64, device=device)
        sv = torch.ones(m, dtype=torch.float64, device=device)
        wr, hr = w, h
    scale = (wr.square().mean().sqrt() / (code.rms() * code.scale_override)).item() or 1.0
    packed, recon_r = block_ldlq(wr / scale, hr, code.quantize_block)
    # SV carries the scale and is stored in fp16: report the weight the stored layer computes with.
    sv_stored = (sv * scale).to(torch.float16).double()
    recon_r = recon_r * (sv_stored / sv)[:, None]
    err = proxy_error(wr, recon_r, hr)
    recon = unrotate_weight(recon_r, su, sv) if incoherence else recon_r
    return QuantizedWeight(packed, su.float(), sv_stored.float(), recon.float(), err)


def to_qtip_linear(q: QuantizedWeight, code: CodeConfig, bias: torch.Tensor | None = None) -> QTIPLinear:
    m, n = q.sv.shape[0], q.su.shape[0]
    tlut_shape = None if code.tlut is None else tuple(code.tlut.shape)
    layer = QTIPLinear(n, m, code.L, code.K, code.V, code.mode, tlut_shape, bias=bias is not None)
    layer.trellis.copy_(q.packed)
    layer.SU.copy_(q.su)
    layer.SV.copy_(q.sv)
    if code.tlut is not None:
        layer.tlut.copy_(code.tlut)
    if bias is not None:
        layer.bias.copy_(bias.detach())
    return layer
