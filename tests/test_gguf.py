"""The GGUF container (qtip_ops.formats.gguf, export/FORMAT.md): quantized directory -> .gguf -> directory
is exact (tensors, config.json, tokenizer files, logits); the stock gguf reader opens the file and sees only
standard tensor types; malformed input of either kind fails with a FormatError naming the file, the tensor or
key and the expected value; truncated or corrupted files never crash the reader; interrupted conversions
leave nothing behind."""

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qtip_ops
from qtip_ops.checkpoint import load_quantized, round_unquantized, save_quantized
from qtip_ops.formats import FormatError
from qtip_ops.formats import gguf as qg
from qtip_ops.models import linear_layers, set_submodule
from qtip_ops.nn import QTIPLinear

gguf = pytest.importorskip("gguf")

SAMPLE = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate."


def _tiny_tokenizer():
    """A byte-level BPE (GPT-2 style, like SmolLM2's) with a few merges and one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("o", "u")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _tiny_quantized(path: Path, tokenizer=None, tie=True, dtype=torch.float16) -> Path:
    """A 2-layer random Llama whose linears are random QTIP layers (one with K=3: a per-module override;
    one left unquantized), saved with save_quantized."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=272, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(0)
    for name, linear in linear_layers(model.model.layers).items():
        if name == "1.mlp.down_proj":
            continue  # stays an nn.Linear
        k = 3 if name == "1.mlp.up_proj" else 2
        layer = QTIPLinear(linear.in_features, linear.out_features, L=12, K=k, V=2, mode="hyb", tlut_shape=(512, 2))
        layer.trellis.copy_(torch.randint(-(2**15), 2**15, layer.trellis.shape, generator=g, dtype=torch.int16))
        layer.tlut.copy_(qtip_ops.default_hyb_tlut())
        layer.SU.copy_(torch.where(torch.randn(linear.in_features, generator=g) >= 0, 1.0, -1.0))
        layer.SV.copy_((torch.rand(linear.out_features, generator=g) + 0.5) * 0.05)
        set_submodule(model, f"model.layers.{name}", layer)
    return save_quantized(model, path, tokenizer, dtype=dtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"tok": (dir, gguf), "notok": (dir, gguf)}: tied fp16 with a tokenizer; untied bf16 without one."""
    root = tmp_path_factory.mktemp("gguf_tiny")
    out = {}
    for key, kwargs in {"tok": dict(tokenizer=_tiny_tokenizer()),
                        "notok": dict(tie=False, dtype=torch.bfloat16)}.items():
        src = _tiny_quantized(root / key, **kwargs)
        out[key] = (src, qg.write_gguf(src, root / f"{key}.gguf"))
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _assert_same_dir(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and torch.equal(ta[name], tb[name]), name
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        if name != "model.safetensors":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_names_map_both_ways():
    for hf in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
               "model.layers.0.self_attn.q_proj.trellis", "model.layers.12.self_attn.o_proj.SV",
               "model.layers.3.mlp.down_proj.tlut", "model.layers.7.post_attention_layernorm.weight"]:
        assert qg.hf_tensor_name(qg.gguf_tensor_name(hf)) == hf
    assert qg.gguf_tensor_name("model.layers.3.self_attn.o_proj.trellis") == "blk.3.attn_output.trellis"
    assert qg.gguf_tensor_name("model.layers.3.self_attn.rotary_emb.inv_freq") is None
    assert qg.hf_tensor_name("blk.03.attn_q.SU") is None  # one spelling per index: the mapping is a bijection
    assert {qg.GGML_F32, qg.GGML_F16, qg.GGML_BF16, qg.GGML_I16} == {
        gguf.GGMLQuantizationType[n].value for n in ("F32", "F16", "BF16", "I16")}


def test_tiny_round_trip_with_and_without_tokenizer(tiny, tmp_path):
    ids = torch.randint(0, 272, (2, 12), generator=torch.Generator().manual_seed(0))
    for key, (src, path) in tiny.items():
        out = qg.read_gguf(path, tmp_path / key)
        _assert_same_dir(src, out)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
        reference, _ = load_quantized(src)
        model, tok = qg.load_gguf_model(path)
        assert sum(isinstance(m, QTIPLinear) for m in model.modules()) == 13
        assert torch.equal(_logits(model, ids), _logits(reference, ids))
        if key == "tok":
            assert tok(SAMPLE)["input_ids"] == _tiny_tokenizer()(SAMPLE)["input_ids"]
        else:
            assert tok is None and not any(p.name.startswith("tokenizer") for p in out.iterdir())
    # reading into an existing model directory replaces it
    out = qg.read_gguf(tiny["notok"][1], tmp_path / "tok")
    _assert_same_dir(tiny["notok"][0], out)


def test_stock_reader_opens_the_file_and_sees_standard_types(tiny):
    for key, (src, path) in tiny.items():
        reader = gguf.GGUFReader(path)
        standard = {gguf.GGMLQuantizationType[n] for n in ("F32", "F16", "BF16", "I16")}
        assert {t.tensor_type for t in reader.tensors} <= standard
        tensors = {t.name: t for t in reader.tensors}
        ours = _tensors(src)
        trellis = tensors["blk.0.attn_q.trellis"]
        assert trellis.tensor_type == gguf.GGMLQuantizationType.I16
        assert torch.equal(torch.from_numpy(trellis.data.copy()), ours["model.layers.0.self_attn.q_proj.trellis"])
        assert list(trellis.shape) == list(reversed(ours["model.layers.0.self_attn.q_proj.trellis"].shape))
        assert ("output.weight" in tensors) == (key == "notok")  # tied embeddings: no output tensor
        assert "blk.1.ffn_down.weight" in tensors and "blk.1.ffn_up.trellis" in tensors
        field = reader.get_field
        assert field("general.architecture").contents() == "llama"
        assert field("llama.block_count").contents() == 2 and field("llama.embedding_length").contents() == 64
        assert field("qtip.format_version").contents() == qg.CONTAINER_VERSION
        assert field("qtip.mode").contents() == "hyb" and field("qtip.K").contents() == 2
        assert field("qtip.per_module").contents() == ["blk.1.ffn_up"]
        assert field("qtip.per_module.blk.1.ffn_up.K").contents() == 3
        assert "blk.1.ffn_down" not in field("qtip.quantized_modules").contents()
        assert json.loads(field("qtip.hf_config").contents())["quantization_config"]["quant_method"] == "qtip"
        if key == "tok":
            tok = _tiny_tokenizer()
            assert field("tokenizer.ggml.model").contents() == "gpt2"
            tokens = field("tokenizer.ggml.tokens").contents()
            assert len(tokens) == 272 and tokens[:len(tok)] == tok.convert_ids_to_tokens(list(range(len(tok))))
            assert field("tokenizer.ggml.merges").contents() == ["Ġ t", "h e", "Ġt he", "o u"]
            assert field("tokenizer.ggml.eos_token_id").contents() == tok.eos_token_id
            assert field("qtip.files").contents() == ["tokenizer.json", "tokenizer_config.json"]
        else:
            assert field("tokenizer.ggml.model") is None and field("qtip.files") is None


# -- malformed GGUF files


def _rewrite(src: Path, dst: Path, meta=None, tensors=None) -> Path:
    """Copies a GGUF through the parser and the writer, applying `meta(metadata)` / `tensors(list)`."""
    with qg.open_gguf(src) as g:
        metadata = dict(g.metadata)
        entries = [(n, i.shape, i.ggml_type, g.tensor(n)) for n, i in g.tensors.items()]
    if meta:
        meta(metadata)
    if tensors:
        entries = tensors(entries)
    qg.write_container(dst, metadata, entries)
    return dst


def _set(key, kv):
    return lambda m: m.__setitem__(key, kv)


def _drop(key):
    return lambda m: m.pop(key)


def _replace_tensor(name, make):
    return lambda entries: [make(e) if e[0] == name else e for e in entries]


BAD_GGUF = {
    "format_version": (dict(meta=_set("qtip.format_version", qg.KV(qg.UINT32, 7))), ["qtip.format_version",
                                                                                        "expected 1", "found 7"]),
    "mode": (dict(meta=_set("qtip.mode", qg.KV(qg.STRING, "quantlut"))), ["qtip.mode", "hyb", "quantlut"]),
    "missing_key": (dict(meta=_drop("qtip.K")), ["qtip.K", "missing"]),
    "missing_config": (dict(meta=_drop("qtip.hf_config")), ["qtip.hf_config", "missing"]),
    "key_type": (dict(meta=_set("qtip.L", qg.KV(qg.STRING, "12"))), ["qtip.L", "int"]),
    "layout": (dict(meta=_set("qtip.layout", qg.KV(qg.STRING, "reference kernel layout"))), ["qtip.layout"]),
    "typed_vs_config": (dict(meta=_set("qtip.L", qg.KV(qg.UINT32, 10))), ["qtip.L", "12", "found 10"]),
    "hyperparameter": (dict(meta=_set("llama.block_count", qg.KV(qg.UINT32, 3))), ["llama.block_count",
                                                                                  "expected 2", "found 3"]),
    "architecture": (dict(meta=_set("general.architecture", qg.KV(qg.STRING, "qwen2"))), ["general.architecture",
                                                                                        "llama"]),
    "side_file_name": (dict(meta=_set("qtip.files", qg.KV(qg.ARRAY, ["../evil.json"], qg.STRING))),
                       ["qtip.files", "../evil.json"]),
    "shape": (dict(tensors=_replace_tensor("blk.0.attn_q.SU", lambda e: (e[0], (48,), e[2], e[3][:48]))),
              ["blk.0.attn_q.SU", "shape (64,)", "shape (48,)"]),
    "trellis_dtype": (dict(tensors=_replace_tensor("blk.0.attn_k.trellis", lambda e: (
        e[0], e[1], qg.GGML_F32, e[3].float()))), ["blk.0.attn_k.trellis", "I16", "F32"]),
    "override_shape": (dict(tensors=_replace_tensor("blk.1.ffn_up.trellis", lambda e: (
        e[0], (e[1][0], 32), e[2], e[3][:, :32].contiguous()))), ["blk.1.ffn_up.trellis", "(32, 48)"]),
    "missing_tensor": (dict(tensors=lambda es: [e for e in es if e[0] != "blk.1.ffn_norm.weight"]),
                       ["blk.1.ffn_norm.weight", "missing"]),
    "extra_tensor": (dict(tensors=lambda es: es + [("blk.0.attn_q.weight", (64, 64), qg.GGML_F16,
                                                     torch.zeros(64, 64, dtype=torch.float16))]),
                     ["blk.0.attn_q.weight"]),
    "unknown_name": (dict(tensors=lambda es: es + [("rope_freqs.weight", (8,), qg.GGML_F32, torch.zeros(8))]),
                     ["rope_freqs.weight"]),
}


@pytest.mark.parametrize("case", sorted(BAD_GGUF))
def test_malformed_gguf_fails_naming_the_key_or_tensor(tiny, tmp_path, case):
    edits, words = BAD_GGUF[case]
    path = _rewrite(tiny["tok"][1], tmp_path / "bad.gguf", **edits)
    with pytest.raises(FormatError) as err:
        qg.read_gguf(path, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "out").exists()


def test_truncated_gguf_fails_naming_the_file(tiny, tmp_path):
    data = tiny["tok"][1].read_bytes()
    for size in (0, 3, 20, 200, 5000, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{size}.gguf"
        path.write_bytes(data[:size])
        with pytest.raises(FormatError, match=str(path)):
            qg.read_gguf(path, tmp_path / "out")
    (tmp_path / "text.gguf").write_text("not a gguf file at all")
    with pytest.raises(FormatError, match="GGUF magic"):
        qg.read_gguf(tmp_path / "text.gguf", tmp_path / "out")


@pytest.fixture(scope="module")
def fuzz_target(tiny):
    """The bytes of the tokenizer-bearing tiny GGUF and where its tensor data starts."""
    path = tiny["tok"][1]
    with qg.open_gguf(path) as g:
        start = g.data_offset
    return path.read_bytes(), start


@settings(max_examples=30, derandomize=True, deadline=None)
@given(data=st.data())
def test_fuzzed_gguf_raises_format_error_or_reads(fuzz_target, data):
    blob, header_end = fuzz_target
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[:data.draw(st.integers(0, len(blob) - 1), label="size")]
    else:
        blob = bytearray(blob)
        offsets = st.one_of(st.integers(0, 511), st.integers(0, header_end - 1), st.integers(0, len(blob) - 1))
        for offset, mask in data.draw(st.lists(st.tuples(offsets, st.integers(1, 255)), min_size=1, max_size=4),
                                      label="flips"):
            blob[offset] ^= mask
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.gguf"
        path.write_bytes(bytes(blob))
        try:
            out = qg.read_gguf(path, Path(tmp) / "out")
        except FormatError as err:
            assert str(err).startswith(str(path))
            return
        # success: a model directory that loads and runs (the tokenizer files' contents are not the
        # reader's business, so they are left out of the load)
        for name in qg.SIDE_FILES:
            (out / name).unlink(missing_ok=True)
        model, _ = load_quantized(out)
        assert _logits(model, torch.tensor([[1, 2, 3]])).shape == (1, 3, 272)


# -- malformed quantized directories (the writer's input)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def _edit_tensors(path: Path, edit) -> None:
    from safetensors.torch import save_file

    tensors = _tensors(path)
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


BAD_DIR = {
    "truncated": (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:999]),
                  ["model.safetensors", "valid safetensors"]),
    "garbage": (lambda p: (p / "model.safetensors").write_bytes(b"\x10" + b"\xff" * 300),
                ["model.safetensors", "valid safetensors"]),
    "shape": (lambda p: _edit_tensors(p, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.SV",
                                                                 torch.ones(32, dtype=torch.float16))),
              ["model.safetensors", "model.layers.0.self_attn.q_proj.SV", "shape (64,)", "shape (32,)"]),
    "dtype": (lambda p: _edit_tensors(p, lambda t: t.__setitem__(
        "model.layers.0.mlp.up_proj.trellis", t["model.layers.0.mlp.up_proj.trellis"].to(torch.int32))),
              ["model.layers.0.mlp.up_proj.trellis", "I16", "I32"]),
    "missing_tensor": (lambda p: _edit_tensors(p, lambda t: t.pop("model.layers.1.self_attn.v_proj.tlut")),
                       ["model.layers.1.self_attn.v_proj.tlut", "missing"]),
    "missing_key": (lambda p: _edit_config(p, lambda c: c["quantization_config"].pop("mode")),
                    ["config.json", "quantization_config.mode", "missing"]),
    "version": (lambda p: _edit_config(p, lambda c: c["quantization_config"].update(format_version=9)),
                ["config.json", "quantization_config.format_version", "expected 1", "found 9"]),
    "mode": (lambda p: _edit_config(p, lambda c: c["quantization_config"].update(mode="4inst")),
             ["config.json", "quantization_config.mode", "hyb", "4inst"]),
    "model_type": (lambda p: _edit_config(p, lambda c: c.update(model_type="gpt2")),
                   ["config.json", "model_type", "llama"]),
    "no_config": (lambda p: (p / "config.json").unlink(), ["config.json", "missing"]),
    "bad_tokenizer": (lambda p: (p / "tokenizer.json").write_text("{\"model\": "), ["tokenizer.json", "JSON"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DIR))
def test_malformed_directory_fails_naming_the_file_and_tensor(tiny, tmp_path, case):
    corrupt, words = BAD_DIR[case]
    src = _copy(tiny["tok"][0], tmp_path / "src")
    corrupt(src)
    with pytest.raises(FormatError) as err:
        qg.write_gguf(src, tmp_path / "out.gguf")
    message = str(err.value)
    for word in words:
        assert word in message, (word, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# -- atomic outputs


def test_interrupted_conversions_leave_nothing_behind(tiny, tmp_path, monkeypatch):
    src, path = tiny["notok"]
    calls = []

    def fail_midway(self, tensor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("interrupted")
        return original(self, tensor, *args, **kwargs)

    original = gguf.GGUFWriter.write_tensor_data
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        qg.write_gguf(src, tmp_path / "new.gguf")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.gguf").write_bytes(b"previous version")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        qg.write_gguf(src, tmp_path / "old.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["old.gguf"]
    assert (tmp_path / "old.gguf").read_bytes() == b"previous version"
    monkeypatch.undo()

    import safetensors.torch

    def fail_save(*args, **kwargs):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_save)
    with pytest.raises(KeyboardInterrupt):
        qg.read_gguf(path, tmp_path / "dir")
    assert [p.name for p in tmp_path.iterdir()] == ["old.gguf"]
    previous = _copy(src, tmp_path / "dir")
    with pytest.raises(KeyboardInterrupt):
        qg.read_gguf(tiny["tok"][1], previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "old.gguf"]
    _assert_same_dir(src, previous)
    with pytest.raises(FileExistsError):  # never replaces something that is not a model directory
        qg.read_gguf(path, tmp_path / "old.gguf")


# -- a real model: a quantized 2-layer slice of SmolLM2-135M


@pytest.fixture(scope="module")
def smollm2_slice(tmp_path_factory):
    from qtip_ops.models import bundled_model_path, load_model
    from qtip_ops.quantize import CodeConfig, quantize_model
    from qtip_ops.quantize.calibration import default_calibration_files, random_windows, read_text, tokenize

    try:
        path = bundled_model_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    model, tok = load_model(path)
    model.model.layers = nn.ModuleList(list(model.model.layers)[:2])
    model.config.num_hidden_layers = 2
    ids = random_windows(tokenize(tok, read_text(default_calibration_files()[:1])), 4, 64)
    quantize_model(model, ids, CodeConfig(K=2, L=8), progress=False)
    round_unquantized(model, torch.float16)
    out = save_quantized(model, tmp_path_factory.mktemp("gguf_smol") / "q", tok)
    return out, tok, ids[:1, :48]


@pytest.mark.slow
def test_smollm2_slice_round_trips_exactly(smollm2_slice, tmp_path, record_property):
    src, tok, probe = smollm2_slice
    t0 = time.perf_counter()
    path = qg.write_gguf(src, tmp_path / "smol.gguf")
    t1 = time.perf_counter()
    out = qg.read_gguf(path, tmp_path / "back")
    t2 = time.perf_counter()
    _assert_same_dir(src, out)
    reference, _ = load_quantized(src)
    model, loaded_tok = load_quantized(out)  # (load_gguf_model is this; the tiny test calls it)
    diff = (_logits(model, probe) - _logits(reference, probe)).abs().max().item()
    record_property("gguf_write_s", round(t1 - t0, 3))
    record_property("gguf_read_s", round(t2 - t1, 3))
    record_property("gguf_bytes", path.stat().st_size)
    record_property("max_logit_diff", diff)
    print(f"\nSmolLM2 2-layer slice: write_gguf {t1 - t0:.2f} s, read_gguf {t2 - t1:.2f} s, "
          f"{path.stat().st_size / 2**20:.1f} MiB, max |logit diff| {diff}")
    assert diff == 0.0
    assert sum(isinstance(m, QTIPLinear) for m in model.modules()) == 14
    assert loaded_tok(SAMPLE)["input_ids"] == tok(SAMPLE)["input_ids"]
    assert loaded_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)

    with qg.open_gguf(path) as g:  # the usual keys (the stock reader is checked on the tiny files: it is slow
        meta = {k: kv.value for k, kv in g.metadata.items()}  # on 100k-entry token arrays)
        assert {info.kind for info in g.tensors.values()} <= {"F32", "F16", "BF16", "I16"}
    assert meta["llama.attention.head_count"] == 9 and meta["llama.attention.head_count_kv"] == 3
    assert meta["llama.rope.freq_base"] == pytest.approx(100000.0) and meta["llama.block_count"] == 2
    assert meta["tokenizer.ggml.model"] == "gpt2"
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == 49152 and tokens[:5] == tok.convert_ids_to_tokens(list(range(5)))
    assert len(meta["tokenizer.ggml.merges"]) == 48900
    assert meta["tokenizer.ggml.bos_token_id"] == tok.bos_token_id
    assert meta["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
