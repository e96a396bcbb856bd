"""Import of reference QTIP checkpoints (qtip_ops.formats.reference): the kernel-layout permutation, the
direct decoder of that layout, and conversions of tiny reference-format Llamas whose logits must equal an
independent reference-style forward (SPEC §4 math in plain torch on the weights decoded straight from the
reference layout)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import qtip_ops
from qtip_ops import reference as ref_ops
from qtip_ops.formats.errors import FormatError
from qtip_ops.formats.reference import (LINEARS, canonical_to_reference, convert_reference, decode_reference_layout,
                                        is_reference_dir, linear_from_reference, reference_to_canonical)
from qtip_ops.hadamard import hadamard_dense, hadamard_k

from reference_fixtures import (DIMS, build_reference_checkpoint, random_layer, reference_tensors,
                                write_checkpoint)

# (m, n) cases: powers of two, and n / m = 2^a * K for the Hadamard sizes 12, 20 and 28.
SHAPES = [(64, 256), (192, 320), (448, 192)]
ATOL = RTOL = 1e-4


def _random_streams(m, n, K, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(1 << 15), 1 << 15, ((m // 16) * (n // 16), 16 * K), generator=g,
                         dtype=torch.int32).to(torch.int16)


def _memory_bytes(words: torch.Tensor) -> torch.Tensor:
    """Bytes of a little-endian int16 tensor, in memory order."""
    w = words.to(torch.int64).reshape(-1) & 0xFFFF
    return torch.stack([w & 0xFF, w >> 8], dim=-1).reshape(-1)


def _from_memory_bytes(data: torch.Tensor, shape) -> torch.Tensor:
    w = data.reshape(-1, 2)
    w = w[:, 0] | (w[:, 1] << 8)
    return ((w ^ 0x8000) - 0x8000).to(torch.int16).reshape(shape)


def _spec_byte_map(m: int, n: int, K: int) -> torch.Tensor:
    """dest[b] = where memory byte b of our (canonical) trellis lands in the reference tensor's memory, written
    out loop by loop from the SPEC §3 text: stream byte i of a tile is the high byte of word i//2 when i is even
    (so memory byte i^1); lane g's chunk [Kg, Kg+K) is stored reversed, in 4K-byte lane groups holding the
    chunks of tiles (2A,2B), (2A+1,2B), (2A,2B+1), (2A+1,2B+1), supertiles row-major."""
    rows, cols = m // 16, n // 16
    dest = torch.empty(rows * cols * 32 * K, dtype=torch.int64)
    for r in range(rows):
        for c in range(cols):
            tile = r * cols + c
            supertile = (r // 2) * (cols // 2) + c // 2
            sub = [(0, 0), (1, 0), (0, 1), (1, 1)].index((r % 2, c % 2))
            for i in range(32 * K):  # stream byte i of the tile
                g, k = divmod(i, K)
                dest[tile * 32 * K + (i ^ 1)] = supertile * 128 * K + g * 4 * K + sub * K + (K - 1 - k)
    return dest


# ---------------------------------------------------------------------------------------------------------
# Layout permutation
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("m,n", [(32, 32), (64, 96), (96, 64), (192, 320)])
def test_permutation_round_trips(m, n, K):
    canonical = _random_streams(m, n, K, seed=m + n + K)
    reference = canonical_to_reference(canonical, m, n, K)
    assert reference.dtype == torch.int16 and reference.shape == canonical.shape
    assert not torch.equal(reference, canonical)
    assert torch.equal(reference_to_canonical(reference, m, n, K), canonical)
    other = _random_streams(m, n, K, seed=7 * (m + n + K))  # read as a reference-layout tensor
    assert torch.equal(canonical_to_reference(reference_to_canonical(other, m, n, K), m, n, K), other)


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("m,n", [(32, 64), (96, 32)])
def test_permutation_is_the_spec_byte_permutation(m, n, K):
    """Tag every memory byte with its index (two passes: index mod 256, index div 256): the transform moves
    whole bytes (the tags come out as a permutation, and random data follows the same permutation), exactly
    where the SPEC text puts them; the inverse moves them back."""
    shape = ((m // 16) * (n // 16), 16 * K)
    nbytes = 2 * shape[0] * shape[1]
    index = torch.arange(nbytes)
    low = _memory_bytes(canonical_to_reference(_from_memory_bytes(index & 0xFF, shape), m, n, K))
    high = _memory_bytes(canonical_to_reference(_from_memory_bytes(index >> 8, shape), m, n, K))
    source = low | (high << 8)  # source[b'] = canonical byte index that landed at reference byte b'
    assert torch.equal(torch.sort(source).values, index)
    dest = torch.empty_like(source)
    dest[source] = index
    assert torch.equal(dest, _spec_byte_map(m, n, K))
    data = _random_streams(m, n, K, seed=3)
    moved = _memory_bytes(canonical_to_reference(data, m, n, K))
    assert torch.equal(moved[dest], _memory_bytes(data))
    back = _memory_bytes(reference_to_canonical(_from_memory_bytes(index & 0xFF, shape), m, n, K))
    back_hi = _memory_bytes(reference_to_canonical(_from_memory_bytes(index >> 8, shape), m, n, K))
    assert torch.equal(back | (back_hi << 8), dest)  # the inverse permutation


def test_permutation_rejects_bad_shapes():
    packed = _random_streams(32, 64, 2, seed=0)
    with pytest.raises(ValueError, match="multiples of 32"):
        canonical_to_reference(_random_streams(48, 64, 2, seed=0), 48, 64, 2)
    with pytest.raises(ValueError, match=r"int16 of shape \(16, 32\)"):
        reference_to_canonical(packed, 64, 64, 2)
    with pytest.raises(ValueError, match="K=5"):
        canonical_to_reference(packed, 32, 64, 5)
    with pytest.raises(ValueError, match="int16"):
        canonical_to_reference(packed.to(torch.int32), 32, 64, 2)


# ---------------------------------------------------------------------------------------------------------
# The direct decoder of the reference layout (the oracle) against our ops
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("m,n", SHAPES)
def test_decode_reference_layout_matches_our_decode(m, n, K, hyb_tlut):
    tlut = hyb_tlut.to(torch.float16)
    canonical = _random_streams(m, n, K, seed=11 * K + m)
    direct = decode_reference_layout(canonical_to_reference(canonical, m, n, K), m, n, K, tlut)
    ours = qtip_ops.decode_weight(canonical, m, n, 16, K, 2, "hyb", tlut)
    assert torch.equal(direct, ours)
    if m * n <= 64 * 256:  # the pure-torch reference op is slow
        assert torch.equal(direct, ref_ops.decode_weight(canonical, m, n, 16, K, 2, "hyb", tlut))


def test_decode_window_wraps_from_lane_31_to_lane_0():
    """A tile whose stream is all zero except its first 16 bits: lane 31's last pairs read them (tail-biting),
    and only windows that overlap bits [0, 16) see non-zero states."""
    K, tlut = 2, torch.zeros(512, 2, dtype=torch.float16)
    tlut[:, 1] = torch.arange(512, dtype=torch.float16)  # value 1 = table index
    canonical = torch.zeros(4, 32, dtype=torch.int16)
    canonical[:, 0] = 0x1234
    w = decode_reference_layout(canonical_to_reference(canonical, 32, 32, K), 32, 32, K, tlut)
    # Step t reads bits [4t, 4t+16) cyclic over 512 bits; steps 0..3 and 125..127 overlap the first word.
    seq = qtip_ops.dense_to_sequences(w)[0].view(128, 2)[:, 1]

    def index(s):
        return ((s * (s + 1)) & 0xFFFF) >> 6 & 511

    expected = torch.zeros(128)
    for t, state in {0: 0x1234, 1: 0x2340, 2: 0x3400, 3: 0x4000, 125: 0x0001, 126: 0x0012, 127: 0x0123}.items():
        expected[t] = index(state)
    assert torch.equal(seq, expected)


# ---------------------------------------------------------------------------------------------------------
# Reference-style forward (SPEC §4, rcp = 0), independent of our rht/gemv ops
# ---------------------------------------------------------------------------------------------------------

def reference_style_forward(x, trellis, SU, SV, tlut, K):
    """x = (input * SU) Had_n / 32 ; y = x Ŵᵀ with Ŵ decoded from the kernel layout ; y = y Had_mᵀ * SV * 32."""
    m, n = SV.numel(), SU.numel()
    w_hat = decode_reference_layout(trellis, m, n, K, tlut).double()
    h = (x.double() * SU.double()) @ hadamard_dense(n) / 32
    y = (h @ w_hat.T) @ hadamard_dense(m).T
    return y * (SV.double() * 32)


class ReferenceStyleLinear(nn.Module):
    def __init__(self, trellis, SU, SV, tlut, K):
        super().__init__()
        self.args = (trellis, SU, SV, tlut, K)

    def forward(self, x):
        return reference_style_forward(x, *self.args).to(x.dtype)


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("m,n", SHAPES)
def test_layer_matches_reference_style_forward(m, n, K):
    layer = random_layer(m, n, K, torch.Generator().manual_seed(m * n + K))
    converted = linear_from_reference(layer["trellis"], layer["SU"], layer["SV"], layer["tlut"], K)
    assert torch.equal(converted.trellis, layer["canonical"])
    x = torch.randn(3, 2, n, generator=torch.Generator().manual_seed(K))
    expected = reference_style_forward(x, layer["trellis"], layer["SU"], layer["SV"], layer["tlut"], K)
    got = converted(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------------------
# Whole checkpoints
# ---------------------------------------------------------------------------------------------------------

def _load_reference_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def reference_style_model(path: Path):
    """The reference checkpoint as a plain transformers Llama (fp32) whose quantized linears run
    reference_style_forward on the stored kernel-layout trellises."""
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = json.loads((path / "config.json").read_text())
    params = raw.pop("quip_params")
    model = LlamaForCausalLM(LlamaConfig.from_dict(raw)).float().eval()
    tensors = _load_reference_tensors(path)
    for name in [k.removesuffix(".trellis") for k in tensors if k.endswith(".trellis")]:
        K = params.get("K_v_proj") or params["K"] if name.endswith("v_proj") else params["K"]
        module = ReferenceStyleLinear(*(tensors.pop(f"{name}.{t}") for t in ("trellis", "SU", "SV", "tlut")), K)
        for extra in ("rcp", "tp_rank"):
            tensors.pop(f"{name}.{extra}", None)
        qtip_ops.models.set_submodule(model, name, module)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model


WHOLE_MODEL_CASES = {
    "hadk-K2-skip": dict(dims="hadk", K=2, skip=("model.layers.1.mlp.down_proj",)),
    "pow2-K3-v4-sharded-tokenizer": dict(dims="pow2", K=3, K_v_proj=4, shards=2, tokenizer=True, rcp=0),
    "had20-K4-tied": dict(dims="had20", K=4, tie=True, layers=1),
}


@pytest.mark.parametrize("case", list(WHOLE_MODEL_CASES))
def test_convert_whole_model_logits(case, tmp_path):
    from qtip_ops.checkpoint import load_quantized
    from qtip_ops.nn import QTIPLinear

    opts = WHOLE_MODEL_CASES[case]
    ckpt = build_reference_checkpoint(tmp_path / "ref", **opts)
    assert is_reference_dir(ckpt.path)
    out = convert_reference(ckpt.path, tmp_path / "out" / "converted")
    assert out == tmp_path / "out" / "converted"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["converted"]  # no temporary left behind
    assert not is_reference_dir(out)
    model, tokenizer = load_quantized(out)
    assert (tokenizer is not None) == opts.get("tokenizer", False)
    qconfig = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qconfig["mode"] == "hyb" and (qconfig["L"], qconfig["V"]) == (16, 2)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QTIPLinear)}
    assert set(quantized) == set(ckpt.canonical)
    for name, layer in quantized.items():
        assert layer.K == ckpt.K[name]
        assert torch.equal(layer.trellis, ckpt.canonical[name])  # repacked exactly into our layout
    for name in opts.get("skip", ()):
        assert isinstance(model.get_submodule(name), nn.Linear)

    oracle = reference_style_model(ckpt.path)
    ids = torch.randint(0, ckpt.config["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = model(ids).logits, oracle(ids).logits
    assert got.abs().max() > 0.1  # not trivially small
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    print(f"[{case}] max |logit| = {expected.abs().max().item():.3g}, "
          f"max |logit difference| = {(got - expected).abs().max().item():.3g}")


def test_convert_replaces_a_previous_conversion_but_not_other_dirs(tmp_path):
    ckpt = build_reference_checkpoint(tmp_path / "ref", dims="pow2", K=2, layers=1)
    out = convert_reference(ckpt.path, tmp_path / "out")
    first = (out / "model.safetensors").read_bytes()
    convert_reference(ckpt.path, out)
    assert (out / "model.safetensors").read_bytes() == first
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="other"):
        convert_reference(ckpt.path, other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="must differ"):
        convert_reference(ckpt.path, ckpt.path)


def test_interrupted_conversion_leaves_no_output(tmp_path, monkeypatch):
    import qtip_ops.formats.reference as reference_format

    ckpt = build_reference_checkpoint(tmp_path / "ref", dims="pow2", K=2, layers=1, tokenizer=True)

    def interrupted(src, out):  # after the weights are written, before the rename
        assert (out / "model.safetensors").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(reference_format, "_copy_tokenizer", interrupted)
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        convert_reference(ckpt.path, tmp_path / "out" / "converted")
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    previous = convert_reference(ckpt.path, tmp_path / "out" / "converted")
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    monkeypatch.setattr(reference_format, "_copy_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_reference(ckpt.path, previous)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["converted"]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before  # the old output is untouched


# ---------------------------------------------------------------------------------------------------------
# Bad input: every error names the file, the tensor or key, and the expected value
# ---------------------------------------------------------------------------------------------------------

Q = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def small_checkpoint():
    config, tensors, _, _ = reference_tensors(dims="hadk", K=2, layers=1)
    return config, tensors


def _drop(key):
    def edit(config, tensors):
        del tensors[key]
    return edit


def _set_tensor(key, fn):
    def edit(config, tensors):
        tensors[key] = fn(tensors[key])
    return edit


def _set_param(key, value):
    def edit(config, tensors):
        config["quip_params"][key] = value
    return edit


def _add_rcp(value):
    def edit(config, tensors):
        tensors[f"{Q}.rcp"] = torch.tensor(value)
    return edit


BAD_INPUTS = {
    "missing SU": (_drop(f"{Q}.SU"), ["model.safetensors", f"{Q}.SU: ", r"expected .*float16.* shape \(192,\)",
                                      "found no such tensor"]),
    "missing trellis": (_drop(f"{Q}.trellis"), ["model.safetensors", f"{Q}.trellis: ",
                                                r"expected .*int16 of shape \(144, 32\)", "found no such tensor"]),
    "missing norm": (_drop("model.norm.weight"), ["model.safetensors", "model.norm.weight: ",
                                                  r"shape \(192,\)", "found no such tensor"]),
    "trellis shape": (_set_tensor(f"{Q}.trellis", lambda t: t[:, :16].contiguous()),
                      ["model.safetensors", f"{Q}.trellis: ", r"expected .*shape \(144, 32\)",
                       r"found shape \(144, 16\)"]),
    "trellis dtype": (_set_tensor(f"{Q}.trellis", lambda t: t.to(torch.int32)),
                      ["model.safetensors", f"{Q}.trellis: ", "expected .*dtype int16", "found dtype int32"]),
    "SV shape": (_set_tensor(f"{Q}.SV", lambda t: t[:96].contiguous()),
                 ["model.safetensors", f"{Q}.SV: ", r"expected .*shape \(192,\)", r"found shape \(96,\)"]),
    "SU dtype": (_set_tensor(f"{Q}.SU", lambda t: t.to(torch.int16)),
                 ["model.safetensors", f"{Q}.SU: ", "expected .*dtype float16", "found dtype int16"]),
    "tlut dtype": (_set_tensor(f"{Q}.tlut", lambda t: t.float()),
                   ["model.safetensors", f"{Q}.tlut: ", "expected .*dtype float16", "found dtype float32"]),
    "tlut shape": (_set_tensor(f"{Q}.tlut", lambda t: torch.cat([t, t])),
                   ["model.safetensors", f"{Q}.tlut: ", r"expected .*shape \(512, 2\)", r"found shape \(1024, 2\)"]),
    "decode mode": (_set_param("decode_mode", "3inst"),
                    ["config.json", "quip_params.decode_mode: ", "expected 'quantlut_sym'", "found '3inst'"]),
    "codebook version": (_set_param("codebook_version", 1),
                         ["config.json", "quip_params.codebook_version: ", "expected 0", "found 1"]),
    "codebook": (_set_param("codebook", "e8p12"), ["config.json", "quip_params.codebook: ", "expected 'bitshift'"]),
    "K": (_set_param("K", 5), ["config.json", "quip_params.K: ", r"expected one of \(2, 3, 4\)", "found 5"]),
    "K_v_proj": (_set_param("K_v_proj", 8), ["config.json", "quip_params.K_v_proj: ", "found 8"]),
    "tlut bits": (_set_param("tlut_bits", 10), ["config.json", "quip_params.tlut_bits: ", "expected 9", "found 10"]),
    "missing L": (lambda c, t: c["quip_params"].pop("L"), ["config.json", "quip_params.L: ", "expected 16",
                                                           "found no such key"]),
    "model type": (lambda c, t: c.update(model_type="mistral"), ["config.json", "model_type: ", "expected 'llama'"]),
    "dims not 32-aligned": (lambda c, t: c.update(intermediate_size=464),
                            ["config.json", "output dimension of layer model.layers.0.mlp.gate_proj: ",
                             "expected a multiple of 32", "found 464"]),
    "dims without Hadamard": (lambda c, t: c.update(intermediate_size=352),
                              ["config.json", "output dimension of layer model.layers.0.mlp.gate_proj: ",
                               "expected 2\\^a or 2\\^a\\*K", "found 352"]),
    "rcp": (_add_rcp(1), ["model.safetensors", f"{Q}.rcp: ", f"expected 0: layer {Q} ", "found 1"]),
    "unexpected": (lambda c, t: t.__setitem__(f"{Q}.Wscale", torch.ones(())),
                   ["model.safetensors", f"{Q}.Wscale: ", "unexpected"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_a_clear_error(case, small_checkpoint, tmp_path):
    edit, patterns = BAD_INPUTS[case]
    config = json.loads(json.dumps(small_checkpoint[0]))
    tensors = dict(small_checkpoint[1])
    edit(config, tensors)
    write_checkpoint(tmp_path / "ref", config, tensors)
    with pytest.raises(FormatError) as info:
        convert_reference(tmp_path / "ref", tmp_path / "out")
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))
    assert str(tmp_path / "ref") in str(info.value)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref"]


def test_sharded_checkpoint_errors_name_the_shard(small_checkpoint, tmp_path):
    config, tensors = small_checkpoint
    tensors = dict(tensors)
    tensors[f"{Q}.trellis"] = tensors[f"{Q}.trellis"].to(torch.int32)
    write_checkpoint(tmp_path / "ref", config, tensors, shards=2)
    index = json.loads((tmp_path / "ref" / "model.safetensors.index.json").read_text())
    shard = index["weight_map"][f"{Q}.trellis"]
    with pytest.raises(FormatError, match=rf"{shard}: {Q}.trellis: expected .*int16.*, found dtype int32"):
        convert_reference(tmp_path / "ref", tmp_path / "out")
    (tmp_path / "ref" / shard).unlink()
    with pytest.raises(FormatError, match=rf"model.safetensors.index.json: shard {shard}: .*found no such file"):
        convert_reference(tmp_path / "ref", tmp_path / "out")


def test_is_reference_dir(tmp_path, small_checkpoint):
    assert not is_reference_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not is_reference_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not is_reference_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(small_checkpoint[0]))
    assert is_reference_dir(tmp_path)
    assert hadamard_k(DIMS["hadk"]["hidden"]) == 12 and hadamard_k(DIMS["hadk"]["intermediate"]) == 28
    assert hadamard_k(DIMS["had20"]["hidden"]) == 20 and LINEARS[0] == "self_attn.q_proj"
