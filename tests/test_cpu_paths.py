"""Every vector CPU path (AVX-512, AVX2) gives results bit-identical to the scalar kernels (dispatch:
qtip_ops.set_cpu_path)."""

import os
import subprocess
import sys

import pytest
import torch

import qtip_ops
from conftest import make_tlut

VECTOR_PATHS = [p for p in qtip_ops.available_cpu_paths() if p != "scalar"]
needs_vector = pytest.mark.skipif(
    not VECTOR_PATHS or qtip_ops.cpu_path() == "scalar",
    reason="this CPU (or QTIP_FORCE_SCALAR=1 / QTIP_CPU_PATH=scalar) runs the scalar kernels only",
)


def on_every_path(fn):
    """fn() on each path this CPU has, as {path: result}."""
    out = {}
    try:
        for path in qtip_ops.available_cpu_paths():
            qtip_ops.set_cpu_path(path)
            out[path] = fn()
    finally:
        qtip_ops.set_cpu_path("auto")
    return out


def assert_identical(results):
    """Every path's result equals the scalar kernels' bit for bit."""
    scalar = results["scalar"]
    as_tuple = lambda r: r if isinstance(r, tuple) else (r,)  # noqa: E731
    for path, result in results.items():
        for x, y in zip(as_tuple(result), as_tuple(scalar)):
            assert torch.equal(x, y), f"the {path} kernels differ from the scalar ones"


# (mode, L, K, V): the shipped HYB configuration at every K the AVX-512 HYB kernel specialises (1..4), HYB at
# L < 16, every K*V the AVX2 kernels special-case (1, 2 and >= 3 bits per step), both table layouts, the
# computed codes, and Viterbi trellises with as few predecessor groups as a vector has lanes (16 and 8).
CODES = [("hyb", 16, 2, 2), ("hyb", 16, 3, 2), ("hyb", 16, 4, 2), ("hyb", 10, 1, 2), ("hyb", 12, 4, 2),
         ("lut", 10, 1, 2), ("lut", 12, 2, 1), ("1mad", 12, 2, 1), ("2mad", 11, 1, 1), ("3inst", 13, 4, 1),
         ("lut", 16, 7, 2), ("1mad", 10, 6, 1), ("lut", 9, 3, 2)]


@needs_vector
@pytest.mark.parametrize("mode,L,K,V", CODES)
def test_viterbi_paths_agree(mode, L, K, V, hyb_tlut):
    tlut = make_tlut(mode, L, V, hyb_tlut)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(L * K))
    for tail_biting in (True, False):
        assert_identical(on_every_path(lambda: qtip_ops.viterbi_quantize(x, L, K, V, mode, tlut, tail_biting)))


@needs_vector
def test_viterbi_paths_agree_on_ties(hyb_tlut):
    """A lut with many equal values makes equal path costs common, so the tie rules are exercised."""
    tlut = torch.randint(-2, 3, (1 << 12, 2)).float()
    x = torch.randint(-2, 3, (4, 64)).float()
    assert_identical(on_every_path(lambda: qtip_ops.viterbi_quantize(x, 12, 2, 2, "lut", tlut)))


@needs_vector
@pytest.mark.parametrize("mode,L,K,V", CODES)
@pytest.mark.parametrize("rows", [1, 5, 64, 65])
def test_gemv_paths_agree(mode, L, K, V, rows, hyb_tlut):
    tlut = make_tlut(mode, L, V, hyb_tlut)
    m, n = 64, 96
    g = torch.Generator().manual_seed(rows)
    packed = torch.randint(-(2**15), 2**15, ((m // 16) * (n // 16), 16 * K), generator=g, dtype=torch.int16)
    x = torch.randn(rows, n, generator=g)
    assert_identical(on_every_path(lambda: qtip_ops.gemv(x, packed, m, n, L, K, V, mode, tlut)))


@needs_vector
@pytest.mark.parametrize("mode,L,K,V", CODES)
@pytest.mark.parametrize("T,tail_biting", [(256, True), (40, True), (24, False), (13 * 2, True)])
def test_bitshift_decode_paths_agree(mode, L, K, V, T, tail_biting, hyb_tlut):
    if T % V or (tail_biting and T * K < L):
        pytest.skip("not a valid stream for this code")
    tlut = make_tlut(mode, L, V, hyb_tlut)
    bits = T * K if tail_biting else L + K * (T - V)
    g = torch.Generator().manual_seed(T)
    packed = torch.randint(-(2**15), 2**15, (7, -(-bits // 16)), generator=g, dtype=torch.int16)
    assert_identical(on_every_path(lambda: qtip_ops.bitshift_decode(packed, L, K, V, mode, tlut, T, tail_biting)))


@needs_vector
@pytest.mark.parametrize("n", [16, 64, 4096, 12 * 8, 172 * 64])
@pytest.mark.parametrize("transpose", [False, True])
def test_rht_paths_agree(n, transpose):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=g)
    s = torch.randn(n, generator=g).sign()
    assert_identical(on_every_path(lambda: qtip_ops.rht(x, s, transpose, 0.5)))


def test_force_scalar_environment_variable():
    code = "import qtip_ops; print(qtip_ops.cpu_path())"
    env = dict(os.environ, QTIP_FORCE_SCALAR="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


def test_set_cpu_path_rejects_unknown_names():
    with pytest.raises(ValueError, match="'fast'"):
        qtip_ops.set_cpu_path("fast")


@pytest.mark.parametrize("value,expected", [("scalar", "scalar"), ("avx2", "avx2"), ("avx512", "avx512")])
def test_cpu_path_environment_variable_caps_the_kernels(value, expected):
    if expected not in qtip_ops.available_cpu_paths():
        pytest.skip(f"this CPU has no {expected} kernels")
    code = "import qtip_ops; print(qtip_ops.cpu_path())"
    env = dict(os.environ, QTIP_CPU_PATH=value)
    env.pop("QTIP_FORCE_SCALAR", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_set_cpu_path_refuses_a_path_this_cpu_lacks():
    missing = [p for p in ("avx2", "avx512") if p not in qtip_ops.available_cpu_paths()]
    if not missing:
        pytest.skip("this CPU runs every path")
    with pytest.raises(ValueError, match=missing[-1]):
        qtip_ops.set_cpu_path(missing[-1])


def _random_tiles(m, n, K, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**15), 2**15, ((m // 16) * (n // 16), 16 * K), generator=g, dtype=torch.int16)


@needs_vector
@pytest.mark.parametrize(
    "table",
    ["fp32 values", "2^6 rows", "2^10 rows"],
    ids=lambda t: t.replace(" ", "-"),
)
def test_gemv_paths_agree_on_hyb_tables_the_register_kernel_may_not_take(table, hyb_tlut):
    """The AVX-512 HYB kernel holds fp16 tables of at most 2^9 rows; other tables must give the same result."""
    if table == "fp32 values":
        tlut = hyb_tlut.float() + 1e-4 * torch.randn(hyb_tlut.shape, generator=torch.Generator().manual_seed(1))
    else:
        tlut = qtip_ops.default_hyb_tlut(q=int(table[2:4].strip()), samples=1 << 12)
    m, n, K = 32, 64, 2
    packed = _random_tiles(m, n, K, seed=3)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(4))
    results = on_every_path(lambda: qtip_ops.gemv(x, packed, m, n, 16, K, 2, "hyb", tlut))
    assert_identical(results)
    dense = qtip_ops.decode_weight(packed, m, n, 16, K, 2, "hyb", tlut)
    torch.testing.assert_close(results["scalar"], x @ dense.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,L,K,V", [("hyb", 16, 2, 2), ("3inst", 12, 2, 1)])
def test_a_row_gives_the_same_bits_alone_or_in_a_batch(mode, L, K, V, hyb_tlut):
    """Fused batches accumulate each row in the same order as batch 1, on every path."""
    tlut = make_tlut(mode, L, V, hyb_tlut)
    m, n = 48, 80
    packed = _random_tiles(m, n, K, seed=5)
    x = torch.randn(7, n, generator=torch.Generator().manual_seed(6))
    for path, y in on_every_path(lambda: qtip_ops.gemv(x, packed, m, n, L, K, V, mode, tlut)).items():
        qtip_ops.set_cpu_path(path)
        try:
            for i in (0, 3, 6):
                assert torch.equal(qtip_ops.gemv(x[i : i + 1], packed, m, n, L, K, V, mode, tlut), y[i : i + 1]), path
        finally:
            qtip_ops.set_cpu_path("auto")
