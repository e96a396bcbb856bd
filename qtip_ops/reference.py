"""Pure-PyTorch reference of every `qtip` op: the oracle of the tests, written independently of csrc/.

Everything here is plain tensor code (int64 arithmetic for the codes, float64 for transforms), slow and
memory-hungry by design; it follows the same conventions as the kernels (documented in ops.py), including
the Viterbi tie-breaking rule: the smallest predecessor index, then the smallest final state.
"""

from __future__ import annotations

import torch

from .codes import check_code
from .hadamard import hadamard_dense
from .layout import sequences_to_dense

MASK32 = 0xFFFFFFFF


def _byte_sum(x: torch.Tensor) -> torch.Tensor:
    total = (x & 0xFF) + ((x >> 8) & 0xFF) + ((x >> 16) & 0xFF) + ((x >> 24) & 0xFF)
    return (total - 510).to(torch.float32) / torch.tensor(147.800537109375, dtype=torch.float32)


def _to_half(bits16: torch.Tensor) -> torch.Tensor:
    signed = ((bits16 ^ 0x8000) - 0x8000).to(torch.int16)
    return signed.view(torch.float16)


def decode_states(states: torch.Tensor, mode: str, L: int, V: int, tlut: torch.Tensor | None = None) -> torch.Tensor:
    """Integer states (any shape) -> values (..., V) float32."""
    q = check_code(L, 1, V, mode, tlut)
    s = states.to(torch.int64)
    if ((s < 0) | (s >= 1 << L)).any():
        raise ValueError(f"states must lie in [0, 2^L) for L={L}")
    if mode == "lut":
        return tlut.to(torch.float32)[s]
    if mode == "1mad":
        return _byte_sum((34038481 * s + 76625530) & MASK32)[..., None]
    if mode == "2mad":
        x = (264435761 * s + 1013904223) & MASK32
        x = (x + ((1664525 * x) >> 32)) & MASK32
        return _byte_sum(x)[..., None]
    if mode == "3inst":
        w = (89226354 * s + 64248484) & MASK32
        w = (w & 0x8FFF8FFF) ^ 0x3B603B60
        return (_to_half(w & 0xFFFF) + _to_half(w >> 16)).to(torch.float32)[..., None]
    # hyb
    h = (s * (s + 1)) & MASK32
    idx = (h >> (15 - q)) & ((1 << q) - 1)
    table = tlut.to(torch.float32)
    first = torch.where((h & 0x8000) != 0, -table[idx, 0], table[idx, 0])
    return torch.stack([first, table[idx, 1]], dim=-1)


def stream_bits(T: int, L: int, K: int, V: int, tail_biting: bool) -> int:
    return T * K if tail_biting else L + K * (T - V)


def unpack_states(packed: torch.Tensor, L: int, K: int, V: int, T: int, tail_biting: bool = True) -> torch.Tensor:
    """(B, words) int16 stream -> (B, T/V) states: step t reads the L bits from bit K*V*t, cyclically."""
    bits_total = stream_bits(T, L, K, V, tail_biting)
    shifts = 15 - torch.arange(16, device=packed.device)
    bits = ((packed.to(torch.int64)[..., None] >> shifts) & 1).reshape(packed.shape[0], packed.shape[1] * 16)
    positions = (torch.arange(T // V, device=packed.device)[:, None] * K * V + torch.arange(L, device=packed.device))
    windows = bits[:, positions % bits_total]  # (B, steps, L)
    weights = 1 << torch.arange(L - 1, -1, -1, device=packed.device)
    return (windows * weights).sum(-1)


def pack_states(states: torch.Tensor, L: int, K: int, V: int, tail_biting: bool = True) -> torch.Tensor:
    """(B, steps) states -> (B, words) int16: the first state's L bits, then K*V new bits per step, MSB
    first, cut to T*K bits with tail-biting."""
    B, steps = states.shape
    kv = K * V
    s = states.to(torch.int64)
    head = (s[:, :1] >> torch.arange(L - 1, -1, -1, device=s.device)) & 1
    tail = (s[:, 1:, None] >> torch.arange(kv - 1, -1, -1, device=s.device)) & 1
    bits = torch.cat([head, tail.reshape(B, (steps - 1) * kv)], dim=1)[:, : stream_bits(steps * V, L, K, V, tail_biting)]
    pad = (-bits.shape[1]) % 16
    bits = torch.nn.functional.pad(bits, (0, pad)).reshape(B, (bits.shape[1] + pad) // 16, 16)
    words = (bits << torch.arange(15, -1, -1, device=s.device)).sum(-1)
    return ((words ^ 0x8000) - 0x8000).to(torch.int16)


def bitshift_decode(packed, L, K, V, mode, tlut, T: int = -1, tail_biting: bool = True) -> torch.Tensor:
    check_code(L, K, V, mode, tlut)
    if T < 0:
        T = packed.shape[1] * 16 // K
    states = unpack_states(packed, L, K, V, T, tail_biting)
    return decode_states(states, mode, L, V, tlut).reshape(packed.shape[0], T)


def _viterbi_pass(x: torch.Tensor, table: torch.Tensor, L: int, kv: int, overlap: torch.Tensor | None) -> torch.Tensor:
    """Best state path (B, steps) of x (B, steps, V) through the trellis; overlap constrains the ends."""
    B, steps, V = x.shape
    fan, groups = 1 << kv, 1 << (L - kv)
    states = torch.arange(1 << L, device=x.device)

    def distance(t):
        d = table[None, :, 0] - x[:, t, 0, None]
        out = d * d
        if V == 2:
            e = table[None, :, 1] - x[:, t, 1, None]
            out = out + e * e
        return out

    inf = torch.tensor(float("inf"), device=x.device)
    cost = distance(0)
    if overlap is not None:
        cost = torch.where((states[None] >> kv) == overlap[:, None], cost, inf)
    backs = []
    for t in range(1, steps):
        best, arg = cost.view(B, fan, groups).min(dim=1)
        backs.append(arg.to(torch.int16))
        cost = best.repeat_interleave(fan, dim=1) + distance(t)
    if overlap is not None:
        cost = torch.where((states[None] & (groups - 1)) == overlap[:, None], cost, inf)
    path = torch.empty(B, steps, dtype=torch.int64, device=x.device)
    path[:, -1] = cost.argmin(dim=1)
    for t in range(steps - 1, 0, -1):
        g = path[:, t] >> kv
        path[:, t - 1] = g + backs[t - 1].gather(1, g[:, None])[:, 0].to(torch.int64) * groups
    return path


def viterbi_quantize(x, L, K, V, mode, tlut, tail_biting: bool = True, chunk: int = 8):
    check_code(L, K, V, mode, tlut)
    B, T = x.shape
    xf = x.to(torch.float32)
    table = decode_states(torch.arange(1 << L, device=x.device), mode, L, V, tlut)
    steps, kv = T // V, K * V
    paths = []
    for b in range(0, B, chunk):
        xb = xf[b : b + chunk]
        overlap = None
        if tail_biting:
            rolled = torch.roll(xb, shifts=(steps // 2) * V, dims=1)
            first = _viterbi_pass(rolled.view(-1, steps, V), table, L, kv, None)
            overlap = first[:, steps // 2] >> kv
        paths.append(_viterbi_pass(xb.view(-1, steps, V), table, L, kv, overlap))
    path = torch.cat(paths) if paths else torch.zeros(0, steps, dtype=torch.int64, device=x.device)
    packed = pack_states(path, L, K, V, tail_biting)
    recon = table[path].reshape(B, T)
    return packed, recon


def decode_weight(packed, m, n, L, K, V, mode, tlut) -> torch.Tensor:
    return sequences_to_dense(bitshift_decode(packed, L, K, V, mode, tlut), m, n)


def gemv(x, packed, m, n, L, K, V, mode, tlut) -> torch.Tensor:
    w = decode_weight(packed, m, n, L, K, V, mode, tlut).to(torch.float64)
    return (x.to(torch.float64) @ w.T).to(x.dtype)


def rht(x, signs=None, transpose: bool = False, scale: float = 1.0) -> torch.Tensor:
    had = hadamard_dense(x.shape[-1]).to(x.device)
    xd = x.to(torch.float64)
    if signs is not None:
        xd = xd * signs.to(torch.float64)
    return (scale * (xd @ (had.T if transpose else had))).to(x.dtype)
