"""pytest-benchmark: qtip rht against a dense matmul by Had_n."""

import pytest
import torch

import qtip_ops
from common import RHT_SIZES


@pytest.mark.parametrize("rows", [1, 16])
@pytest.mark.parametrize("n", RHT_SIZES)
def test_rht(benchmark, n, rows):
    x, s = torch.randn(rows, n), torch.randn(n).sign()
    benchmark.group = f"rht n={n} rows={rows}"
    benchmark(qtip_ops.rht, x, s)


@pytest.mark.parametrize("rows", [1, 16])
@pytest.mark.parametrize("n", RHT_SIZES)
def test_dense_hadamard(benchmark, n, rows):
    x, had = torch.randn(rows, n), qtip_ops.hadamard_dense(n).float()
    benchmark.group = f"rht n={n} rows={rows}"
    benchmark(torch.matmul, x, had)
