"""qtip::rht against the dense Had_n, and its algebra: orthogonal, invertible, differentiable."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import qtip_ops
from qtip_ops import reference

SIZES = [1, 2, 16, 256, 12, 24, 12 * 64, 20 * 8, 28 * 4, 36 * 2, 52, 60 * 2, 108 * 2, 116, 124 * 2, 140, 156, 172,
         172 * 8]


def signs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g).sign()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("transpose", [False, True])
def test_rht_equals_dense_hadamard(n, transpose):
    x = torch.randn(3, n, dtype=torch.float64)
    s = signs(n)
    had = qtip_ops.hadamard_dense(n)
    want = 0.5 * (x * s) @ (had.T if transpose else had)
    got = qtip_ops.rht(x, s, transpose, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    got32 = qtip_ops.rht(x.float(), s, transpose, 0.5)
    torch.testing.assert_close(got32, want.float(), rtol=1e-5, atol=1e-5)


def test_hadamard_k_follows_the_reference_search_order():
    assert qtip_ops.hadamard_k(11008) == 172 and 11008 // 172 == 64
    assert qtip_ops.hadamard_k(14336) == 28
    assert qtip_ops.hadamard_k(13824) == 108
    assert qtip_ops.hadamard_k(5120) == 20
    assert qtip_ops.hadamard_k(3072) == 12
    assert qtip_ops.hadamard_k(53248) == 52
    assert qtip_ops.hadamard_k(4096) == 1


@pytest.mark.parametrize("n", [12, 172 * 2, 1024])
def test_had_is_orthogonal(n):
    had = qtip_ops.hadamard_dense(n)
    torch.testing.assert_close(had @ had.T, torch.eye(n, dtype=had.dtype))
    eye = torch.eye(n)
    torch.testing.assert_close(qtip_ops.rht(eye) @ qtip_ops.rht(eye).T, eye, atol=1e-5, rtol=0)


@given(n=st.sampled_from(SIZES), rows=st.integers(0, 5), seed=st.integers(0, 2**16), transpose=st.booleans())
def test_rht_inverts_and_preserves_norm(n, rows, seed, transpose):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g)
    s = signs(n, seed)
    y = qtip_ops.rht(x, s, transpose)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    back = qtip_ops.rht(y, None, not transpose) * s
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)


def test_leading_dims_and_noncontiguous_input():
    x = torch.randn(4, 48, 3).transpose(1, 2)  # (4, 3, 48), not contiguous
    s = signs(48)
    got = qtip_ops.rht(x, s, False, 2.0)
    torch.testing.assert_close(got, reference.rht(x, s, False, 2.0), rtol=1e-5, atol=1e-5)
    assert got.shape == (4, 3, 48)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes_keep_their_dtype(dtype):
    x = torch.randn(5, 96).to(dtype)
    got = qtip_ops.rht(x, signs(96))
    assert got.dtype == dtype
    want = reference.rht(x.float(), signs(96))
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


def test_real_valued_signs_scale_elementwise():
    x = torch.randn(2, 64)
    s = torch.rand(64) + 0.5
    torch.testing.assert_close(qtip_ops.rht(x, s), qtip_ops.rht(x * s), rtol=1e-6, atol=1e-6)


@pytest.mark.one_path  # path-independent (reference or fp64 work): one CPU path is enough
def test_gradients_match_finite_differences():
    x = torch.randn(3, 24, dtype=torch.float64, requires_grad=True)
    s = torch.randn(24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: qtip_ops.rht(a, b, False, 0.7), (x, s))
    assert torch.autograd.gradcheck(lambda a, b: qtip_ops.rht(a, b, True, 1.3), (x, s))
    assert torch.autograd.gradcheck(lambda a: qtip_ops.rht(a, None, True), (x,))


@pytest.mark.parametrize("n", [7, 180, 10920])
def test_unsupported_size_names_n(n):
    with pytest.raises(RuntimeError, match=f"n={n}"):
        qtip_ops.rht(torch.randn(2, n))
    with pytest.raises(ValueError, match=f"n={n}"):
        qtip_ops.hadamard_k(n)


def test_bad_signs_and_dtype_are_rejected():
    with pytest.raises(RuntimeError, match=r"shape \(16\)"):
        qtip_ops.rht(torch.randn(2, 16), torch.ones(8))
    with pytest.raises(RuntimeError, match="Long"):
        qtip_ops.rht(torch.ones(2, 16, dtype=torch.int64))
