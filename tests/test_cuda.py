"""The CPU test cases on CUDA: every op bit-identical (codes) or within tolerance (products) to the CPU
kernels. Skipped, with the reason, where there is no GPU or the library was built without CUDA kernels."""

import pytest
import torch

import qtip_ops
from conftest import MODE_V, cuda, make_tlut

pytestmark = cuda


def _tlut(mode, L, V, hyb_tlut):
    t = make_tlut(mode, L, V, hyb_tlut)
    return None if t is None else t.cuda()


@pytest.mark.parametrize("mode,V", MODE_V)
def test_decode_states_bit_identical(mode, V, hyb_tlut):
    L = 16
    tlut = make_tlut(mode, L, V, hyb_tlut)
    states = torch.arange(1 << L)
    cpu = qtip_ops.decode_states(states, mode, L, V, tlut)
    gpu = qtip_ops.decode_states(states.cuda(), mode, L, V, None if tlut is None else tlut.cuda())
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("mode,V", MODE_V)
@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_bitshift_decode_bit_identical(mode, V, K, hyb_tlut):
    L = 16
    if K * V >= L:
        pytest.skip("needs K*V < L")
    tlut = make_tlut(mode, L, V, hyb_tlut)
    packed = torch.randint(-(2**15), 2**15, (37, 16 * K), dtype=torch.int16)
    cpu = qtip_ops.bitshift_decode(packed, L, K, V, mode, tlut)
    gpu = qtip_ops.bitshift_decode(packed.cuda(), L, K, V, mode, None if tlut is None else tlut.cuda())
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("mode,V", MODE_V)
@pytest.mark.parametrize("rows", [1, 2, 16, 64, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gemv_matches_cpu(mode, V, rows, dtype, hyb_tlut):
    L, K, m, n = 16, 2, 256, 512
    tlut = make_tlut(mode, L, V, hyb_tlut)
    packed = torch.randint(-(2**15), 2**15, ((m // 16) * (n // 16), 16 * K), dtype=torch.int16)
    x = torch.randn(rows, n).to(dtype)
    cpu = qtip_ops.gemv(x.float(), packed, m, n, L, K, V, mode, tlut)
    gpu = qtip_ops.gemv(x.cuda(), packed.cuda(), m, n, L, K, V, mode, None if tlut is None else tlut.cuda())
    assert gpu.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(gpu.float().cpu(), cpu, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("n", [4096, 12 * 256, 172 * 64])
@pytest.mark.parametrize("transpose", [False, True])
def test_rht_matches_cpu(n, transpose):
    x = torch.randn(5, n)
    s = torch.randn(n).sign()
    torch.testing.assert_close(qtip_ops.rht(x.cuda(), s.cuda(), transpose, 0.5).cpu(),
                               qtip_ops.rht(x, s, transpose, 0.5), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,V", [("1mad", 1), ("hyb", 2)])
@pytest.mark.parametrize("K", [2, 3, 4])
def test_viterbi_bit_identical(mode, V, K, hyb_tlut):
    tlut = make_tlut(mode, 16, V, hyb_tlut)
    x = torch.randn(8, 256)
    cpu = qtip_ops.viterbi_quantize(x, 16, K, V, mode, tlut)
    gpu = qtip_ops.viterbi_quantize(x.cuda(), 16, K, V, mode, None if tlut is None else tlut.cuda())
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
