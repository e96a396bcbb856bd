"""qtip::gemv: y = x @ W^T with the packed weight, against the reference, for every batch shape."""

import pytest
import torch

import qtip_ops
from qtip_ops import reference
from qtip_ops.layout import dense_to_sequences, sequences_to_dense
from conftest import MODE_V, make_tlut


def packed_weight(m, n, L, K, V, mode, tlut, seed=0):
    """A valid packed weight without running Viterbi: random cyclic streams are valid trellis tiles."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**15), 2**15, ((m // 16) * (n // 16), 16 * K), generator=g, dtype=torch.int16)


@pytest.mark.parametrize("mode,V", MODE_V)
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("rows", [0, 1, 3, 16, 33, 70])
def test_gemv_matches_reference(mode, V, K, rows, hyb_tlut):
    L = 12
    if K * V >= L:
        pytest.skip("needs K*V < L")
    tlut = make_tlut(mode, L, V, hyb_tlut)
    m, n = 48, 80
    packed = packed_weight(m, n, L, K, V, mode, tlut, seed=K)
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(rows))
    got = qtip_ops.gemv(x, packed, m, n, L, K, V, mode, tlut)
    want = reference.gemv(x, packed, m, n, L, K, V, mode, tlut)
    assert got.shape == (rows, m) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_gemv_equals_x_times_decoded_weight_at_l16(hyb_tlut):
    m, n = 64, 96
    packed = packed_weight(m, n, 16, 2, 2, "hyb", hyb_tlut)
    w = qtip_ops.decode_weight(packed, m, n, 16, 2, 2, "hyb", hyb_tlut)
    assert torch.equal(w, reference.decode_weight(packed, m, n, 16, 2, 2, "hyb", hyb_tlut))
    x = torch.randn(5, n)
    torch.testing.assert_close(qtip_ops.gemv(x, packed, m, n, 16, 2, 2, "hyb", hyb_tlut), x @ w.T, rtol=1e-5, atol=1e-4)


def test_leading_dims_noncontiguous_and_dtypes():
    m, n, L, K = 32, 64, 10, 3
    packed = packed_weight(m, n, L, K, 1, "1mad", None)
    w = reference.decode_weight(packed, m, n, L, K, 1, "1mad", None)
    x = torch.randn(2, n, 3, 4).permute(0, 2, 3, 1)  # (2, 3, 4, n), not contiguous
    got = qtip_ops.gemv(x, packed, m, n, L, K, 1, "1mad", None)
    assert got.shape == (2, 3, 4, m)
    torch.testing.assert_close(got, x @ w.T, rtol=1e-5, atol=1e-4)
    for dtype in (torch.float16, torch.bfloat16):
        out = qtip_ops.gemv(x.to(dtype), packed, m, n, L, K, 1, "1mad", None)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), x.to(dtype).float() @ w.T, rtol=2e-2, atol=5e-2)


def test_quantized_matrix_round_trip_through_the_layout(hyb_tlut):
    w = torch.randn(32, 48)
    assert torch.equal(sequences_to_dense(dense_to_sequences(w), 32, 48), w)
    q, recon = qtip_ops.quantize_matrix(w, K=3, mode="hyb", tlut=hyb_tlut)
    torch.testing.assert_close(q.dense(), recon)
    x = torch.randn(4, 48)
    torch.testing.assert_close(q.apply(x), x @ recon.T, rtol=1e-5, atol=1e-4)
    assert (recon - w).square().mean() < 0.03 * w.square().mean()


def test_gemv_gradient_is_grad_times_weight():
    m, n, L, K = 32, 48, 8, 2
    tlut = qtip_ops.random_lut(L, 1)
    packed = packed_weight(m, n, L, K, 1, "lut", tlut)
    w = reference.decode_weight(packed, m, n, L, K, 1, "lut", tlut)
    x = torch.randn(3, n, requires_grad=True)
    g = torch.randn(3, m)
    qtip_ops.gemv(x, packed, m, n, L, K, 1, "lut", tlut).backward(g)
    torch.testing.assert_close(x.grad, g @ w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "m,n,x_shape,packed_shape,message",
    [
        (30, 32, (1, 32), (2, 32), "multiples of 16"),
        (32, 32, (1, 48), (4, 32), "n=32"),
        (32, 32, (1, 32), (3, 32), r"\(4, 32\)"),
        (32, 32, (1, 32), (4, 16), r"\(4, 32\)"),
    ],
)
def test_bad_shapes_name_the_expected_value(m, n, x_shape, packed_shape, message):
    packed = torch.zeros(packed_shape, dtype=torch.int16)
    with pytest.raises(RuntimeError, match=message):
        qtip_ops.gemv(torch.randn(x_shape), packed, m, n, 16, 2, 1, "1mad", None)


def test_wrong_packed_dtype_is_rejected():
    with pytest.raises(RuntimeError, match="int16"):
        qtip_ops.gemv(torch.randn(1, 32), torch.zeros(4, 32, dtype=torch.int32), 32, 32, 16, 2, 1, "1mad", None)


def test_layout_permutation_matches_the_fragment_formula():
    from qtip_ops.layout import sequence_to_tile

    seqs = torch.arange(2 * 256, dtype=torch.float32).view(2, 256)
    dense = sequences_to_dense(seqs, 16, 32)
    q = sequence_to_tile()  # p -> 16 r + c from the formula in layout.py's docstring
    for p in range(256):
        r, c = divmod(q[p].item(), 16)
        assert dense[r, c] == p and dense[r, 16 + c] == 256 + p
    assert torch.equal(dense_to_sequences(dense), seqs)
