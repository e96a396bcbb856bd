"""decode_states: every mode against the reference and against facts stated in SPEC §2."""

import hashlib
import struct

import pytest
import torch

import qtip_ops
from qtip_ops import reference
from conftest import MODE_V, make_tlut


@pytest.mark.parametrize("mode,V", MODE_V)
@pytest.mark.parametrize("L", [4, 9, 16])
def test_decode_states_matches_reference_bit_exactly(mode, V, L, hyb_tlut):
    if V >= L:
        pytest.skip("needs K*V < L")
    tlut = make_tlut(mode, L, V, hyb_tlut)
    states = torch.arange(1 << L)
    got = qtip_ops.decode_states(states, mode, L, V, tlut)
    want = reference.decode_states(states, mode, L, V, tlut)
    assert got.shape == (1 << L, V) and got.dtype == torch.float32
    assert torch.equal(got, want)


def test_decode_states_any_shape_and_int_dtype(hyb_tlut):
    states = torch.randint(0, 1 << 16, (3, 5, 7), dtype=torch.int32)
    got = qtip_ops.decode_states(states, "hyb", 16, 2, hyb_tlut)
    assert got.shape == (3, 5, 7, 2)
    assert torch.equal(got, reference.decode_states(states.long(), "hyb", 16, 2, hyb_tlut))
    assert qtip_ops.decode_states(torch.zeros(0, dtype=torch.int64), "1mad", 16, 1).shape == (0, 1)


def _byte_sum_value(x):
    return (sum((x >> (8 * i)) & 0xFF for i in range(4)) - 510) / 147.800537109375


def test_1mad_and_2mad_by_hand():
    for s in [0, 1, 2, 12345, 65535]:
        x = (34038481 * s + 76625530) % 2**32
        got = qtip_ops.decode_states(torch.tensor([s]), "1mad", 16, 1).item()
        assert got == pytest.approx(_byte_sum_value(x), abs=1e-6)
        y = (264435761 * s + 1013904223) % 2**32
        y = (y + ((1664525 * y) >> 32)) % 2**32
        got = qtip_ops.decode_states(torch.tensor([s]), "2mad", 16, 1).item()
        assert got == pytest.approx(_byte_sum_value(y), abs=1e-6)


def test_1mad_has_1021_distinct_values_and_unit_variance():
    values = qtip_ops.decode_states(torch.arange(1 << 16), "1mad", 16, 1)
    assert len(torch.unique(values)) <= 1021
    assert values.square().mean().sqrt().item() == pytest.approx(1.0, abs=0.01)


def _half(bits):
    return struct.unpack("<e", struct.pack("<H", bits))[0]


def test_3inst_adds_in_fp16_by_hand():
    differs = 0
    for s in range(0, 1 << 16, 97):
        w = (89226354 * s + 64248484) % 2**32
        w = (w & 0x8FFF8FFF) ^ 0x3B603B60
        lo, hi = _half(w & 0xFFFF), _half(w >> 16)
        fp16_sum = float(torch.tensor(lo + hi, dtype=torch.float64).to(torch.float16))
        got = qtip_ops.decode_states(torch.tensor([s]), "3inst", 16, 1).item()
        assert got == fp16_sum
        differs += fp16_sum != lo + hi
    assert differs > 0  # the fp16 rounding is visible on some states, as SPEC says


def test_3inst_rms_is_not_renormalised():
    values = qtip_ops.decode_states(torch.arange(1 << 16), "3inst", 16, 1)
    assert values.square().mean().sqrt().item() == pytest.approx(1.24, abs=0.01)


def test_hyb_flips_element_zero_from_bit_15():
    tlut = torch.arange(1, 2 * 512 + 1, dtype=torch.float32).reshape(512, 2)
    for s in [0, 1, 2, 3, 181, 1000, 40000, 65535]:
        h = (s * (s + 1)) % 2**32
        idx = (h >> 6) & 511
        sign = -1.0 if h & 0x8000 else 1.0
        got = qtip_ops.decode_states(torch.tensor([s]), "hyb", 16, 2, tlut)[0]
        assert got.tolist() == [sign * tlut[idx, 0].item(), tlut[idx, 1].item()]


def test_lut_is_a_lookup():
    tlut = qtip_ops.random_lut(10, 2)
    states = torch.randint(0, 1 << 10, (100,))
    assert torch.equal(qtip_ops.decode_states(states, "lut", 10, 2, tlut), tlut[states])


@pytest.mark.parametrize(
    "mode,L,V,tlut_shape,message",
    [
        ("nope", 16, 1, None, "unknown decode mode 'nope'"),
        ("1mad", 17, 1, None, "L=17"),
        ("1mad", 1, 1, None, "L=1"),
        ("1mad", 16, 2, None, "V=2"),
        ("3inst", 16, 3, None, "V=3"),
        ("1mad", 16, 1, (4, 1), "takes no tlut"),
        ("lut", 8, 1, None, "needs a tlut"),
        ("lut", 8, 1, (255, 1), "(256, 1)"),
        ("hyb", 16, 1, (512, 2), "V=1"),
        ("hyb", 16, 2, (500, 2), "(2^Q, 2)"),
    ],
)
def test_bad_codes_are_rejected_with_the_value(mode, L, V, tlut_shape, message):
    tlut = None if tlut_shape is None else torch.randn(tlut_shape)
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("^", r"\^")):
        qtip_ops.decode_states(torch.arange(4), mode, L, V, tlut)
    with pytest.raises(ValueError):
        reference.decode_states(torch.arange(4), mode, L, V, tlut)


def test_out_of_range_state_is_rejected():
    with pytest.raises(RuntimeError, match="state 256"):
        qtip_ops.decode_states(torch.tensor([0, 256]), "1mad", 8, 1)


@pytest.mark.one_path  # path-independent (reference or fp64 work): one CPU path is enough
def test_default_hyb_tlut_is_deterministic_and_scaled():
    a = qtip_ops.default_hyb_tlut(q=8, seed=3, samples=1 << 13)
    b = qtip_ops.default_hyb_tlut(q=8, seed=3, samples=1 << 13)
    c = qtip_ops.default_hyb_tlut(q=8, seed=4, samples=1 << 13)
    assert a.shape == (256, 2) and a.dtype == torch.float16
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.float().std(unbiased=False).item() == pytest.approx(0.9682458365518543, abs=2e-3)
    # k-means on a Gaussian: centres are spread symmetrically around the origin.
    assert a.float().mean(0).abs().max().item() < 0.1


def test_code_rms_matches_decoded_values(hyb_tlut):
    values = reference.decode_states(torch.arange(1 << 16), "hyb", 16, 2, hyb_tlut)
    assert qtip_ops.code_rms("hyb", 16, 2, hyb_tlut) == pytest.approx(values.square().mean().sqrt().item(), rel=1e-6)


@pytest.mark.one_path  # path-independent (reference or fp64 work): one CPU path is enough
def test_hadamard_fingerprints_match_spec():
    # SPEC §4: first 16 hex digits of sha256 over the int8 row-major bytes.
    expected = {
        12: "67507aecbe2abee5", 20: "f54960fecf1ccf70", 28: "a6cb994c78f9acd4", 36: "d674d8240e6b622b",
        52: "9ee082772819b105", 60: "091e76fba0aef583", 108: "690a34c6c9ed2f0e", 116: "e35aecfbc1d95799",
        124: "9b41cf5242a1dd12", 140: "b9ff01506ffe4db5", 156: "99a1b852ce559ffd", 172: "378ef12c7cc31f3e",
    }
    for k, fingerprint in expected.items():
        h = qtip_ops.hadamard.hadamard_small(k)
        assert torch.equal(h @ h.T, k * torch.eye(k, dtype=h.dtype))
        digest = hashlib.sha256(h.to(torch.int8).numpy().tobytes()).hexdigest()[:16]
        assert digest == fingerprint, k


@pytest.mark.one_path  # path-independent (reference or fp64 work): one CPU path is enough
def test_generated_hadamard_header_is_current():
    from pathlib import Path
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("gen_hadamard", root / "csrc" / "gen_hadamard.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (root / "csrc" / "hadamard_data.h").read_text() == gen.render()
