"""The small Hadamard matrices H_K (package data) and the dense randomized-Hadamard matrix Had_n.

Had_n = (H_K kron S_{n/K}) / sqrt(n), S the natural-order (Sylvester) Walsh-Hadamard matrix, H_K acting on
the slow index (SPEC §4). The fast transform is the `qtip::rht` op; the dense matrix here is what the
reference and the tests compare it against.
"""

from functools import lru_cache
from importlib import resources

import torch

# The order in which the reference tries the sizes (SPEC §4): the first K that divides n wins.
SEARCH_ORDER = (172, 156, 140, 124, 116, 108, 60, 52, 36, 28, 20, 12)


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def hadamard_k(n: int) -> int:
    """K such that n = K * 2^a with K from SEARCH_ORDER (first dividing K), or 1 for a power of two."""
    for k in SEARCH_ORDER:
        if n > 0 and n % k == 0:
            if not _is_pow2(n // k):
                raise ValueError(f"rht dimension n={n} is divisible by {k} but n/{k}={n // k} is not a power of two")
            return k
    if not _is_pow2(n):
        raise ValueError(f"rht dimension n={n} is not supported: it must be 2^a or 2^a*K, K in {sorted(SEARCH_ORDER)}")
    return 1


@lru_cache(maxsize=None)
def hadamard_small(k: int) -> torch.Tensor:
    """H_K as a (K, K) float64 tensor of +-1 (H_1 = [[1]])."""
    if k == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    text = resources.files("qtip_ops").joinpath(f"data/hadamard/had{k}.txt").read_text()
    rows = text.split()
    if len(rows) != k or any(len(r) != k for r in rows):
        raise ValueError(f"had{k}.txt is not a {k}x{k} matrix of +/-")
    return torch.tensor([[1.0 if ch == "+" else -1.0 for ch in r] for r in rows], dtype=torch.float64)


def sylvester(n: int) -> torch.Tensor:
    """The n x n natural-order Walsh-Hadamard matrix (unnormalised), n a power of two."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@lru_cache(maxsize=16)
def hadamard_dense(n: int) -> torch.Tensor:
    """Had_n = (H_K kron S_{n/K}) / sqrt(n), float64."""
    k = hadamard_k(n)
    return torch.kron(hadamard_small(k), sylvester(n // k)) / n**0.5
