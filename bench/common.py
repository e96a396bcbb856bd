"""Shared by bench/run.py and the pytest-benchmark suites: the benchmarked cases and a small timer."""

from __future__ import annotations

import time

import torch

import qtip_ops

GEMV_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]  # (m, n) of W: y = x @ W^T, x (batch, n)
GEMV_BATCHES = [1, 4, 16, 64]
KS = [2, 3, 4]
RHT_SIZES = [4096, 11008, 14336]  # 2^12; 172 * 64 and 28 * 512 (the H_K stage of SPEC §4)
L = 16


def packed_weight(m: int, n: int, K: int, seed: int = 0) -> torch.Tensor:
    """A valid packed weight without running Viterbi: any cyclic bit stream is a valid trellis tile."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**15), 2**15, ((m // 16) * (n // 16), 16 * K), generator=g, dtype=torch.int16)


def gaussian_tiles(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 256, generator=torch.Generator().manual_seed(seed))


def seconds(fn, min_time: float = 0.3, min_reps: int = 3, max_reps: int = 200) -> float:
    """Median wall time of fn() after one warm-up call, over at least min_reps calls or min_time seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def hyb_code():
    return dict(L=L, V=2, mode="hyb", tlut=qtip_ops.default_hyb_tlut())
