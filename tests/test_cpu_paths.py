"""The AVX2 and the scalar CPU kernels give bit-identical results (dispatch: qtip_ops.set_cpu_path)."""

import os
import subprocess
import sys

import pytest
import torch

import qtip_ops
from conftest import make_tlut

needs_avx2 = pytest.mark.skipif(
    qtip_ops.cpu_path() != "avx2",
    reason="this CPU (or QTIP_FORCE_SCALAR=1) runs the scalar kernels only",
)


def on_both_paths(fn):
    """fn() on the AVX2 kernels, then on the scalar ones."""
    try:
        qtip_ops.set_cpu_path("auto")
        fast = fn()
        qtip_ops.set_cpu_path("scalar")
        slow = fn()
    finally:
        qtip_ops.set_cpu_path("auto")
    return fast, slow


def assert_identical(a, b):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.equal(x, y)


# (mode, L, K, V): the shipped HYB configuration, every K*V the vector kernels special-case (1, 2 and >= 3
# bits per step), both table layouts, and the computed codes.
CODES = [("hyb", 16, 2, 2), ("hyb", 16, 3, 2), ("hyb", 12, 4, 2), ("lut", 10, 1, 2), ("lut", 12, 2, 1),
         ("1mad", 12, 2, 1), ("2mad", 11, 1, 1), ("3inst", 13, 4, 1), ("lut", 16, 7, 2)]


@needs_avx2
@pytest.mark.parametrize("mode,L,K,V", CODES)
def test_viterbi_paths_agree(mode, L, K, V, hyb_tlut):
    tlut = make_tlut(mode, L, V, hyb_tlut)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(L * K))
    for tail_biting in (True, False):
        assert_identical(*on_both_paths(lambda: qtip_ops.viterbi_quantize(x, L, K, V, mode, tlut, tail_biting)))


@needs_avx2
def test_viterbi_paths_agree_on_ties(hyb_tlut):
    """A lut with many equal values makes equal path costs common, so the tie rules are exercised."""
    tlut = torch.randint(-2, 3, (1 << 12, 2)).float()
    x = torch.randint(-2, 3, (4, 64)).float()
    assert_identical(*on_both_paths(lambda: qtip_ops.viterbi_quantize(x, 12, 2, 2, "lut", tlut)))


@needs_avx2
@pytest.mark.parametrize("mode,L,K,V", CODES)
@pytest.mark.parametrize("rows", [1, 5, 64, 65])
def test_gemv_paths_agree(mode, L, K, V, rows, hyb_tlut):
    tlut = make_tlut(mode, L, V, hyb_tlut)
    m, n = 64, 96
    g = torch.Generator().manual_seed(rows)
    packed = torch.randint(-(2**15), 2**15, ((m // 16) * (n // 16), 16 * K), generator=g, dtype=torch.int16)
    x = torch.randn(rows, n, generator=g)
    assert_identical(*on_both_paths(lambda: qtip_ops.gemv(x, packed, m, n, L, K, V, mode, tlut)))


@needs_avx2
@pytest.mark.parametrize("mode,L,K,V", CODES)
@pytest.mark.parametrize("T,tail_biting", [(256, True), (40, True), (24, False), (13 * 2, True)])
def test_bitshift_decode_paths_agree(mode, L, K, V, T, tail_biting, hyb_tlut):
    if T % V or (tail_biting and T * K < L):
        pytest.skip("not a valid stream for this code")
    tlut = make_tlut(mode, L, V, hyb_tlut)
    bits = T * K if tail_biting else L + K * (T - V)
    g = torch.Generator().manual_seed(T)
    packed = torch.randint(-(2**15), 2**15, (7, -(-bits // 16)), generator=g, dtype=torch.int16)
    assert_identical(*on_both_paths(lambda: qtip_ops.bitshift_decode(packed, L, K, V, mode, tlut, T, tail_biting)))


@needs_avx2
@pytest.mark.parametrize("n", [16, 64, 4096, 12 * 8, 172 * 64])
@pytest.mark.parametrize("transpose", [False, True])
def test_rht_paths_agree(n, transpose):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=g)
    s = torch.randn(n, generator=g).sign()
    assert_identical(*on_both_paths(lambda: qtip_ops.rht(x, s, transpose, 0.5)))


def test_force_scalar_environment_variable():
    code = "import qtip_ops; print(qtip_ops.cpu_path())"
    env = dict(os.environ, QTIP_FORCE_SCALAR="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


def test_set_cpu_path_rejects_unknown_names():
    with pytest.raises(ValueError, match="'fast'"):
        qtip_ops.set_cpu_path("fast")
