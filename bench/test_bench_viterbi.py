"""pytest-benchmark: viterbi_quantize (L=16) against reference.py, per batch of 256-weight tiles."""

import pytest

import qtip_ops
from qtip_ops import reference
from common import KS, L, gaussian_tiles

CODES = {"hyb": 2, "1mad": 1}


@pytest.mark.parametrize("mode", list(CODES))
@pytest.mark.parametrize("K", KS)
def test_viterbi(benchmark, K, mode):
    tlut = qtip_ops.default_hyb_tlut() if mode == "hyb" else None
    x = gaussian_tiles(16)
    benchmark.group = f"viterbi K={K} {mode} (16 tiles)"
    benchmark.pedantic(qtip_ops.viterbi_quantize, (x, L, K, CODES[mode], mode, tlut), rounds=3)


@pytest.mark.parametrize("K", KS)
def test_viterbi_reference(benchmark, K):
    x = gaussian_tiles(2)
    benchmark.group = f"viterbi reference K={K} hyb (2 tiles)"
    benchmark.pedantic(reference.viterbi_quantize, (x, L, K, 2, "hyb", qtip_ops.default_hyb_tlut()), rounds=1)
