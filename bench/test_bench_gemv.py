"""pytest-benchmark: qtip gemv (HYB, L=16) against torch F.linear in fp32 and bf16, same shapes.

Run: python -m pytest bench/ --benchmark-only   (bench/run.py prints the ratio tables)
"""

import pytest
import torch
import torch.nn.functional as F

import qtip_ops
from common import GEMV_BATCHES, GEMV_SHAPES, KS, hyb_code, packed_weight


@pytest.mark.parametrize("batch", GEMV_BATCHES)
@pytest.mark.parametrize("m,n", GEMV_SHAPES)
@pytest.mark.parametrize("K", KS)
def test_gemv(benchmark, K, m, n, batch):
    c = hyb_code()
    packed = packed_weight(m, n, K)
    x = torch.randn(batch, n)
    benchmark.group = f"gemv {m}x{n} batch {batch}"
    benchmark(qtip_ops.gemv, x, packed, m, n, c["L"], K, c["V"], c["mode"], c["tlut"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch", GEMV_BATCHES)
@pytest.mark.parametrize("m,n", GEMV_SHAPES)
def test_linear(benchmark, m, n, batch, dtype):
    w = torch.randn(m, n, dtype=dtype)
    x = torch.randn(batch, n, dtype=dtype)
    benchmark.group = f"gemv {m}x{n} batch {batch}"
    benchmark(F.linear, x, w)
