"""Typed wrappers over `torch.ops.qtip.*`, their fake (meta) kernels and autograd formulas.

Conventions shared by every op (and by reference.py):

* Streams: a trellis sequence of T weights (V per step, S = T/V steps) is stored as the bitstream of its
  states: the first state's L bits, then the K*V new low bits of each later state, MSB first, in int16
  words (stream bit 0 = bit 15 of word 0). With tail-biting the stream is cyclic and exactly T*K bits
  long (a 16x16 tile costs 256*K bits = 16*K words); without it, L + K*(T - V) bits.
* bitshift_decode infers T = 16 * words / K when T = -1 (tail-biting streams whose T*K is a multiple of 16,
  e.g. every 256-weight tile); pass T explicitly otherwise.
* Viterbi ties: the smallest predecessor index wins, then the smallest final state. Costs are fp32.
* gemv: weight layout in layout.py; computes in fp32 and returns x's dtype.
* rht: computes in fp32 (fp64 for fp64 input) and returns x's dtype.
"""

from __future__ import annotations

import torch

from . import _library
from .layout import TILE_WEIGHTS, sequences_to_dense

_library.load()

_ops = torch.ops.qtip


# ---------------------------------------------------------------------------------------------- wrappers


def rht(x: torch.Tensor, signs: torch.Tensor | None = None, transpose: bool = False, scale: float = 1.0) -> torch.Tensor:
    """scale * (x * signs) @ Had_n (or @ Had_n^T with transpose=True) along the last dim; differentiable."""
    return _ops.rht(x, signs, transpose, scale)


def decode_states(states: torch.Tensor, mode: str, L: int, V: int, tlut: torch.Tensor | None = None) -> torch.Tensor:
    """Integer states (any shape) -> values (..., V) float32: the code's lookup table."""
    return _ops.decode_states(states, mode, L, V, tlut)


def bitshift_decode(packed, L, K, V, mode, tlut=None, T: int = -1, tail_biting: bool = True) -> torch.Tensor:
    """Packed streams (B, words) int16 -> weights (B, T) float32."""
    return _ops.bitshift_decode(packed, L, K, V, mode, tlut, T, tail_biting)


def viterbi_quantize(x, L, K, V, mode, tlut=None, tail_biting: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-MSE trellis path of each row of x (B, T) -> (packed (B, words) int16, recon (B, T) float32)."""
    return _ops.viterbi_quantize(x, L, K, V, mode, tlut, tail_biting)


def gemv(x, packed, m, n, L, K, V, mode, tlut=None) -> torch.Tensor:
    """y = x @ W^T for x (..., n) and the packed (m, n) weight W; differentiable in x."""
    return _ops.gemv(x, packed, m, n, L, K, V, mode, tlut)


def decode_weight(packed, m, n, L, K, V, mode, tlut=None) -> torch.Tensor:
    """The dense (m, n) float32 weight that gemv multiplies by."""
    return sequences_to_dense(bitshift_decode(packed, L, K, V, mode, tlut), m, n)


# ------------------------------------------------------------------------------------------ fake kernels


def _stream_words(T, L, K, V, tail_biting):
    bits = T * K if tail_biting else L + K * (T - V)
    return (bits + 15) // 16


@torch.library.register_fake("qtip::rht")
def _(x, signs, transpose=False, scale=1.0):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("qtip::decode_states")
def _(states, mode, L, V, tlut=None):
    return states.new_empty((*states.shape, V), dtype=torch.float32)


@torch.library.register_fake("qtip::bitshift_decode")
def _(packed, L, K, V, mode, tlut, T=-1, tail_biting=True):
    if T < 0:
        T = packed.shape[1] * 16 // K
    return packed.new_empty((packed.shape[0], T), dtype=torch.float32)


@torch.library.register_fake("qtip::viterbi_quantize")
def _(x, L, K, V, mode, tlut, tail_biting=True):
    B, T = x.shape
    packed = x.new_empty((B, _stream_words(T, L, K, V, tail_biting)), dtype=torch.int16)
    return packed, x.new_empty((B, T), dtype=torch.float32)


@torch.library.register_fake("qtip::gemv")
def _(x, packed, m, n, L, K, V, mode, tlut):
    torch._check(x.shape[-1] == n, lambda: f"gemv input's last dim must be n={n}, got {x.shape[-1]}")
    torch._check(packed.shape[1] * 16 == TILE_WEIGHTS * K, lambda: "packed trellis must have 16*K words per tile")
    return x.new_empty((*x.shape[:-1], m))


# ---------------------------------------------------------------------------------------------- autograd


def _rht_setup(ctx, inputs, output):
    x, signs, transpose, scale = inputs
    ctx.transpose, ctx.scale = transpose, scale
    ctx.save_for_backward(x if signs is not None and signs.requires_grad else None, signs)


def _rht_backward(ctx, grad):
    x, signs = ctx.saved_tensors
    # y = scale * (x * s) @ M  =>  dL/d(x * s) = scale * grad @ M^T, the transform with the other orientation.
    g = _ops.rht(grad, None, not ctx.transpose, ctx.scale)
    grad_x = grad_signs = None
    if ctx.needs_input_grad[0]:
        grad_x = g if signs is None else (g * signs).to(grad.dtype)
    if signs is not None and ctx.needs_input_grad[1]:
        grad_signs = (g.float() * x.float()).reshape(-1, x.shape[-1]).sum(0).to(signs.dtype)
    return grad_x, grad_signs, None, None


torch.library.register_autograd("qtip::rht", _rht_backward, setup_context=_rht_setup)


def _gemv_setup(ctx, inputs, output):
    _, packed, m, n, L, K, V, mode, tlut = inputs
    ctx.code = (m, n, L, K, V, mode)
    ctx.save_for_backward(packed, tlut)


def _gemv_backward(ctx, grad):
    packed, tlut = ctx.saved_tensors
    m, n, L, K, V, mode = ctx.code
    # dL/dx = grad @ W. Decoding W once per backward is the simple, exact route; the weight is frozen.
    w = decode_weight(packed, m, n, L, K, V, mode, tlut)
    grad_x = (grad.to(torch.float32) @ w).to(grad.dtype)
    return grad_x, None, None, None, None, None, None, None, None


torch.library.register_autograd("qtip::gemv", _gemv_backward, setup_context=_gemv_setup)
