"""transformers integration (qtip_ops/hf.py): after `import qtip_ops`, AutoModelForCausalLM.from_pretrained loads a
QTIP directory with QTIPLinear layers and computes what the in-memory quantized model computes, in eager mode,
under torch.compile(fullgraph=True) and in generate; save_pretrained -> from_pretrained round-trips.

The model is a 2-layer slice of the bundled SmolLM2-135M quantized at K=2, L=8 (a few seconds)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import qtip_ops  # noqa: E402  (registers "qtip" with transformers)
from conftest import cuda  # noqa: E402
from qtip_ops.nn import QTIPLinear  # noqa: E402

CODE = dict(K=2, L=8)


def _load(path, **kwargs):
    from transformers import AutoModelForCausalLM

    kwargs.setdefault("dtype", torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def _qtip_count(model) -> int:
    return sum(isinstance(m, QTIPLinear) for m in model.modules())


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """(in-memory quantized 2-layer SmolLM2 slice, its save_quantized directory, probe ids)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtip_ops.checkpoint import round_unquantized, save_quantized
    from qtip_ops.models import bundled_model_path
    from qtip_ops.quantize import CodeConfig, quantize_model
    from qtip_ops.quantize.calibration import default_calibration_files, random_windows, read_text, tokenize

    try:
        path = bundled_model_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # Only the first 2 of the 30 decoder layers are built (the others' tensors are skipped): half the load time.
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                 num_hidden_layers=2).eval()
    assert len(model.model.layers) == 2
    ids = random_windows(tokenize(tok, read_text(default_calibration_files()[:1])), 4, 64)
    quantize_model(model, ids, CodeConfig(**CODE), progress=False)
    round_unquantized(model, torch.float16)  # the model now computes exactly what the directory stores
    out = save_quantized(model, tmp_path_factory.mktemp("hf") / "smol-qtip", tok)
    return model.eval(), out, ids[:2, :48]


@pytest.fixture(scope="module")
def loaded(quantized):
    return _load(quantized[1])


def test_from_pretrained_matches_in_memory_model(quantized, loaded):
    model, path, probe = quantized
    assert _qtip_count(loaded) == 14
    assert type(loaded.config.quantization_config).__name__ == "QTIPConfig"
    assert loaded.is_quantized and loaded.config.quantization_config.quantized_modules == sorted(
        n for n, m in model.named_modules() if isinstance(m, QTIPLinear))
    q = loaded.model.layers[1].mlp.down_proj
    assert (q.L, q.K, q.V, q.mode) == (8, 2, 2, "hyb") and q.trellis.dtype == torch.int16
    assert q.SU.dtype == torch.float16  # stored precision kept, whatever the model dtype
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe).logits, model(probe).logits, rtol=0, atol=1e-5)


def test_generate_greedy_matches(quantized, loaded):
    from transformers import AutoTokenizer

    model, path, probe = quantized
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok("To be, or not to be", return_tensors="pt")
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        want = model.generate(**prompt, **kwargs)
        got = loaded.generate(**prompt, **kwargs)
    assert got.shape == (1, prompt["input_ids"].shape[1] + 8)
    assert torch.equal(got, want)


def test_compile_fullgraph_matches_eager(quantized, loaded):
    _, _, probe = quantized
    torch._dynamo.reset()
    compiled = torch.compile(loaded.forward, fullgraph=True)
    with torch.no_grad():
        want = loaded(input_ids=probe, use_cache=False).logits
        got = compiled(input_ids=probe, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_save_pretrained_round_trip(quantized, loaded, tmp_path):
    from safetensors import safe_open

    from qtip_ops.checkpoint import load_quantized

    model, _, probe = quantized
    loaded.save_pretrained(tmp_path / "rt")
    with safe_open(str(tmp_path / "rt" / "model.safetensors"), framework="pt") as f:
        assert f.metadata().get("format") == "pt"
        assert "model.layers.0.self_attn.q_proj.trellis" in f.keys()
        assert "model.layers.0.self_attn.q_proj.weight" not in f.keys()
    qc = json.loads((tmp_path / "rt" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "qtip" and qc["L"] == 8 and len(qc["quantized_modules"]) == 14
    again = _load(tmp_path / "rt")
    ours, _ = load_quantized(tmp_path / "rt")  # our own loader reads what save_pretrained wrote
    with torch.no_grad():
        want = model(probe).logits
        torch.testing.assert_close(again(probe).logits, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours(probe).logits, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_keeps_stored_precision(quantized, dtype):
    """A half-precision model: the unquantized layers take `dtype`, the QTIPLinear buffers keep their stored
    fp16 (SV carries the scale), the layers compute in fp32 and return `dtype`."""
    model, path, probe = quantized
    half = _load(path, dtype=dtype)
    q = half.model.layers[0].self_attn.o_proj
    assert half.dtype == dtype and _qtip_count(half) == 14 and q.SV.dtype == torch.float16
    with torch.no_grad():
        logits = half(probe).logits
        want = model(probe).logits
    assert logits.dtype == dtype
    agree = (logits.float().argmax(-1) == want.argmax(-1)).float().mean()
    assert agree > 0.9, agree


# ------------------------------------------------------------------- config variants (tiny random Llama)


@pytest.fixture(scope="module")
def tiny_partial(tmp_path_factory):
    """A tiny Llama with its down_proj layers left unquantized, saved by save_quantized."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from qtip_ops.checkpoint import round_unquantized, save_quantized
    from qtip_ops.quantize import CodeConfig, quantize_model

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(1))
    quantize_model(model, ids, CodeConfig(**CODE), skip=("down_proj",), progress=False)
    round_unquantized(model, torch.float16)
    return model, save_quantized(model, tmp_path_factory.mktemp("tiny") / "q"), ids


def _rewrite_config(src, dst, edit):
    shutil.copytree(src, dst)
    raw = json.loads((dst / "config.json").read_text())
    edit(raw["quantization_config"])
    (dst / "config.json").write_text(json.dumps(raw))
    return dst


def test_modules_to_not_convert_without_module_list(tiny_partial, tmp_path):
    """A config with only modules_to_not_convert: every other nn.Linear (but lm_head) becomes QTIPLinear."""
    model, path, ids = tiny_partial
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    assert qc["modules_to_not_convert"] == ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]

    def edit(q):
        del q["quantized_modules"]
        q["modules_to_not_convert"] = ["down_proj"]  # a suffix pattern; lm_head is skipped by default

    loaded = _load(_rewrite_config(path, tmp_path / "patterns", edit))
    assert _qtip_count(loaded) == 12
    assert isinstance(loaded.model.layers[1].mlp.down_proj, nn.Linear) and isinstance(loaded.lm_head, nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_per_module_codes(tiny_partial, tmp_path):
    """A layer with its own code (K=3, L=10) next to the K=2, L=8 ones: save_quantized records it in
    per_module, from_pretrained builds that layer's shell with it."""
    import copy

    from qtip_ops.checkpoint import save_quantized

    model, _, ids = tiny_partial
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    layer = QTIPLinear(128, 64, L=10, K=3, V=2, mode="hyb", tlut_shape=(512, 2))
    layer.trellis.copy_(torch.randint(-(2**15), 2**15, layer.trellis.shape, generator=g, dtype=torch.int16))
    layer.tlut.copy_(qtip_ops.default_hyb_tlut())
    layer.SV.fill_(0.01)
    model.model.layers[0].mlp.down_proj = layer
    path = save_quantized(model, tmp_path / "mixed")
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    assert qc["per_module"] == {"model.layers.0.mlp.down_proj": {"K": 3, "L": 10, "V": 2, "mode": "hyb"}}
    loaded = _load(path)
    down = loaded.model.layers[0].mlp.down_proj
    assert (down.K, down.L) == (3, 10) and _qtip_count(loaded) == 13
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_missing_quantized_tensor_is_an_error(tiny_partial, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path, _ = tiny_partial
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["model.layers.0.self_attn.k_proj.trellis"]
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks tensors .*layers\.0\.self_attn\.k_proj\.trellis"):
        _load(broken)


def test_bad_configs_are_refused(tiny_partial, tmp_path):
    _, path, _ = tiny_partial
    with pytest.raises(ValueError, match="unknown decode mode 'xyz'"):
        _load(_rewrite_config(path, tmp_path / "mode", lambda q: q.update(mode="xyz")))
    with pytest.raises(ValueError, match="format_version"):
        _load(_rewrite_config(path, tmp_path / "version", lambda q: q.update(format_version=99)))
    with pytest.raises(ValueError, match="'model.layers.7.mlp.up_proj' does not exist"):
        _load(_rewrite_config(path, tmp_path / "name",
                              lambda q: q["quantized_modules"].append("model.layers.7.mlp.up_proj")))


def test_float_checkpoint_cannot_be_quantized_on_load(tmp_path):
    """QTIP needs calibration: a QTIPConfig passed for a float checkpoint is refused, not silently ignored."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from qtip_ops.hf import QTIPConfig

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "float")
    with pytest.raises(ValueError, match="pre-quantized"):
        _load(tmp_path / "float", quantization_config=QTIPConfig(L=8))


def test_import_is_lazy_and_registers_when_transformers_loads():
    """`import qtip_ops` does not import transformers (seconds); "qtip" is registered as soon as transformers
    loads its quantizer registry (which from_pretrained does). The other order (transformers first) is this
    test process's: conftest imports qtip_ops, and the tests above load through the registry."""
    script = textwrap.dedent(
        """
        import sys
        import qtip_ops
        assert "transformers" not in sys.modules, "import qtip_ops imported transformers"
        from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
        from qtip_ops.hf import QTIPConfig, QTIPHfQuantizer
        assert AUTO_QUANTIZATION_CONFIG_MAPPING["qtip"] is QTIPConfig
        assert AUTO_QUANTIZER_MAPPING["qtip"] is QTIPHfQuantizer
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@cuda
def test_cuda_from_pretrained_matches_cpu(tiny_partial):
    """device_map="cuda": the QTIPLinear buffers on the GPU, logits, compiled logits and greedy tokens as on CPU.
    (The tiny model: no bundled-model package needed on the GPU machine.)"""
    model, path, ids = tiny_partial
    gpu = _load(path, device_map="cuda")
    assert gpu.model.layers[0].self_attn.q_proj.trellis.is_cuda and _qtip_count(gpu) == 12
    with torch.no_grad():
        want = model(ids).logits
        torch.testing.assert_close(gpu(ids.cuda()).logits.cpu(), want, rtol=1e-4, atol=1e-4)
        compiled = torch.compile(gpu.forward, fullgraph=True)
        torch.testing.assert_close(compiled(input_ids=ids.cuda(), use_cache=False).logits.cpu(), want,
                                   rtol=1e-4, atol=1e-4)
        kwargs = dict(max_new_tokens=8, do_sample=False)
        assert torch.equal(gpu.generate(ids[:1, :8].cuda(), **kwargs).cpu(), model.generate(ids[:1, :8], **kwargs))
