"""Decode modes of the bitshift trellis (SPEC §2): names, parameter rules, and codebook (tlut) construction."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

MODES = ("lut", "1mad", "2mad", "3inst", "hyb")
COMPUTED_MODES = ("1mad", "2mad", "3inst")  # V=1, no table
TABLE_MODES = ("lut", "hyb")

# Reconstruction variance of an ideal 2-bit Gaussian quantizer, sqrt(1 - 2^-4): the RMS the reference
# rescales its k-means HYB table to.
HYB_TARGET_STD = 0.9682458365518543


def check_code(L: int, K: int, V: int, mode: str, tlut: torch.Tensor | None) -> int:
    """Validates a code's parameters like the kernels do; returns Q (log2 of a HYB table's rows, else 0)."""
    if mode not in MODES:
        raise ValueError(f"unknown decode mode {mode!r}; expected one of {', '.join(MODES)}")
    if not 2 <= L <= 16:
        raise ValueError(f"L (state bits) must be in [2, 16], got L={L}")
    if not 1 <= K <= 8:
        raise ValueError(f"K (bits per weight) must be in [1, 8], got K={K}")
    if V not in (1, 2):
        raise ValueError(f"V (weights per step) must be 1 or 2, got V={V}")
    if K * V >= L:
        raise ValueError(f"need K*V < L, got K={K}, V={V}, L={L}")
    if mode in COMPUTED_MODES:
        if V != 1:
            raise ValueError(f"mode {mode!r} decodes one weight per state (V=1), got V={V}")
        if tlut is not None:
            raise ValueError(f"mode {mode!r} is computed, it takes no tlut (pass None)")
        return 0
    if tlut is None:
        raise ValueError(f"mode {mode!r} needs a tlut tensor, got None")
    if mode == "lut":
        if tuple(tlut.shape) != (1 << L, V):
            raise ValueError(f"mode 'lut' needs a tlut of shape (2^L, V) = ({1 << L}, {V}), got {tuple(tlut.shape)}")
        return 0
    if V != 2:
        raise ValueError(f"mode 'hyb' decodes two weights per state (V=2), got V={V}")
    rows = tlut.shape[0] if tlut.dim() == 2 else 0
    q = rows.bit_length() - 1
    if tlut.dim() != 2 or tlut.shape[1] != 2 or rows != 1 << q or not 1 <= q <= 15:
        raise ValueError(f"mode 'hyb' needs a tlut of shape (2^Q, 2) with 1 <= Q <= 15, got {tuple(tlut.shape)}")
    return q


def kmeans(samples: torch.Tensor, centers: torch.Tensor, thresh: float = 1e-5, max_iter: int = 300) -> torch.Tensor:
    """Lloyd's k-means from the given initial centers, stopping when the mean distortion improves by less than
    `thresh` (scipy.cluster.vq.kmeans' rule). Empty clusters keep their center."""
    centers = centers.clone()
    previous = math.inf
    for _ in range(max_iter):
        d2 = torch.cdist(samples, centers).square_()
        distortion, assign = d2.min(dim=1)
        sums = torch.zeros_like(centers).index_add_(0, assign, samples)
        counts = torch.bincount(assign, minlength=centers.shape[0]).to(samples.dtype)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        mean = distortion.sqrt().mean().item()
        if previous - mean <= thresh:
            break
        previous = mean
    return centers


# The default table ships with the package: the reference's recipe (2^20 samples) takes minutes of k-means.
DEFAULT_HYB = {"q": 9, "seed": 0, "samples": 1 << 20}
_DEFAULT_HYB_FILE = "data/hyb_tlut_q9_seed0.txt"


def compute_hyb_tlut(q: int = 9, seed: int = 0, samples: int = 1 << 20) -> torch.Tensor:
    """The HYB codebook, computed: k-means on `samples` 2-D N(0, I) points starting from `randn(2^q, 2)`
    centres (one torch.Generator seeded with `seed` draws both), rescaled to a population std of
    sqrt(15/16) (SPEC §2). Returns (2^q, 2) float16, like the reference's per-layer tlut."""
    if not 1 <= q <= 15:
        raise ValueError(f"q must be in [1, 15], got q={q}")
    gen = torch.Generator().manual_seed(seed)
    points = torch.randn(samples, 2, generator=gen, dtype=torch.float64)
    init = torch.randn(1 << q, 2, generator=gen, dtype=torch.float64)
    centers = kmeans(points, init)
    centers = centers / centers.std(unbiased=False) * HYB_TARGET_STD
    return centers.to(torch.float16)


@lru_cache(maxsize=8)
def _hyb_tlut(q: int, seed: int, samples: int) -> torch.Tensor:
    if {"q": q, "seed": seed, "samples": samples} == DEFAULT_HYB:
        text = resources.files("qtip_ops").joinpath(_DEFAULT_HYB_FILE).read_text()
        return torch.tensor([float.fromhex(v) for v in text.split()], dtype=torch.float64).view(-1, 2).half()
    return compute_hyb_tlut(q, seed, samples)


def default_hyb_tlut(q: int = 9, seed: int = 0, samples: int = 1 << 20) -> torch.Tensor:
    """The HYB codebook for (q, seed, samples): deterministic; the default arguments load the shipped copy
    of compute_hyb_tlut(9, 0, 2^20), other arguments compute it (seconds to minutes)."""
    return _hyb_tlut(q, seed, samples).clone()


def write_default_hyb_tlut() -> None:
    """Regenerates the shipped default table (python -c 'import qtip_ops.codes as c; c.write_default_hyb_tlut()')."""
    table = compute_hyb_tlut(**DEFAULT_HYB).double()
    path = Path(__file__).resolve().parent / _DEFAULT_HYB_FILE
    path.write_text("\n".join(f"{a.hex()} {b.hex()}" for a, b in table.tolist()) + "\n")


def random_lut(L: int, V: int, seed: int = 0) -> torch.Tensor:
    """A Gaussian (2^L, V) table for mode 'lut' (the paper's RPTC-like code)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1 << L, V, generator=gen)


def code_rms(mode: str, L: int, V: int, tlut: torch.Tensor | None = None) -> float:
    """RMS of the code's values over all 2^L states: the scale a target is matched to before quantizing."""
    from .ops import decode_states

    states = torch.arange(1 << L, device=tlut.device if tlut is not None else "cpu")
    return decode_states(states, mode, L, V, tlut).square().mean().sqrt().item()
