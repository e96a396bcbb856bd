"""PT2 readiness of the `qtip` custom ops: opcheck on every op, torch.compile (fullgraph, dynamic batch, no
recompiles), torch.export + AOTInductor packaging loaded in a fresh process, and gradients through the
compiled graph.

The model under test is one QTIP linear layer:
    y = rht(gemv(rht(x, SU, False, 1/32)), None, True) * SV * 32 * scale
with SU/SV random +-1 sign vectors and W ~= scale * decode(packed) a 32x48 trellis-quantized weight, so the
input transform exercises the non-power-of-two Hadamard path (48 = 12 * 4) and the output one the pure
Walsh-Hadamard path (32 = 2^5).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch._functorch.config
import torch._inductor.config
import torch.fx.experimental._config as fx_config
from torch._dynamo.testing import CompileCounterWithBackend
from torch.library import opcheck

import qtip_ops
from qtip_ops.hadamard import hadamard_dense

M, N = 32, 48  # weight (m, n): 2 x 3 tiles of 16x16
ATOL = RTOL = 1e-4  # fp32 model outputs are O(1..10); the fp64 dense reference differs by ~1e-6

ops = torch.ops.qtip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _signs(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=_gen(seed)).float() * 2 - 1


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_compile_caches():
    """Every compile here traces the package's current fake kernels and autograd formulas. The on-disk
    AOTAutograd/FX-graph caches key on the forward graph, not on the Python source of a custom op's
    backward, so a warm cache (from an earlier run or another checkout) would replay a stale compiled backward
    and hide a broken formula; both are off for this module."""
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(
        enable_autograd_cache=False
    ):
        yield


@pytest.fixture(scope="module")
def qm_hyb():
    """A 32x48 HYB (L=16, K=2, V=2) weight. The tlut is passed explicitly: default_hyb_tlut() runs k-means on
    2^18 points (about a minute on 2 cores) and its values are irrelevant here; fp16 like the reference's."""
    tlut = torch.randn(512, 2, generator=_gen(1)).half()
    qm, _ = qtip_ops.quantize_matrix(torch.randn(M, N, generator=_gen(2)), K=2, mode="hyb", tlut=tlut)
    assert qm.packed.shape == (M // 16 * N // 16, 16 * 2) and qm.packed.dtype == torch.int16
    return qm


@pytest.fixture(scope="module")
def qm_1mad():
    """A 16x32 computed-code weight (mode 1mad, V=1, tlut=None): covers the `Tensor? tlut` = None path."""
    qm, _ = qtip_ops.quantize_matrix(torch.randn(16, 32, generator=_gen(3)), K=2, mode="1mad")
    assert qm.tlut is None
    return qm


class QTIPLinear(torch.nn.Module):
    """x*SU -> RHT -> fused trellis gemv -> RHT^T -> *SV (one incoherence-processed QTIP linear layer)."""

    def __init__(self, qm, learn_su: bool = False):
        super().__init__()
        self.m, self.n, self.L, self.K, self.V, self.mode = qm.m, qm.n, qm.L, qm.K, qm.V, qm.mode
        self.scale = float(qm.scale)
        self.register_buffer("packed", qm.packed.clone())
        self.register_buffer("tlut", qm.tlut.clone())
        su = _signs(qm.n, 10)
        if learn_su:
            self.SU = torch.nn.Parameter(su)
        else:
            self.register_buffer("SU", su)
        self.register_buffer("SV", _signs(qm.m, 11))

    def forward(self, x):
        x = qtip_ops.rht(x, self.SU, False, 1.0 / 32)
        y = qtip_ops.gemv(x, self.packed, self.m, self.n, self.L, self.K, self.V, self.mode, self.tlut)
        return qtip_ops.rht(y, None, True, 1.0) * (self.SV * (32.0 * self.scale))


def dense_reference(model: QTIPLinear, x: torch.Tensor, su: torch.Tensor | None = None) -> torch.Tensor:
    """The same layer as dense float64 matrix products (Had_n from hadamard.py, W from bitshift_decode)."""
    w = qtip_ops.decode_weight(model.packed, model.m, model.n, model.L, model.K, model.V, model.mode, model.tlut)
    su = model.SU.detach().double() if su is None else su
    h_n, h_m = hadamard_dense(model.n), hadamard_dense(model.m)
    t = (x.double() * su) @ h_n / 32
    y = t @ w.double().T
    return (y @ h_m.T) * model.SV.double() * 32 * model.scale


@pytest.fixture(scope="module")
def model(qm_hyb):
    return QTIPLinear(qm_hyb).eval()


# ------------------------------------------------------------------------------------------------ opcheck


def _rht_cases():
    x = lambda *shape, seed=20, **kw: torch.randn(*shape, generator=_gen(seed), **kw)  # noqa: E731
    return {
        "pow2-no-signs": lambda: (x(4, 64, requires_grad=True), None, False, 1.0),
        "pow2-no-signs-transpose": lambda: (x(4, 64, requires_grad=True), None, True, 0.5),
        "had12-signs": lambda: (x(3, 48, requires_grad=True), _signs(48, 21), False, 1.0 / 32),
        "had12-signs-transpose": lambda: (x(3, 48, requires_grad=True), _signs(48, 21), True, 2.0),
        "signs-require-grad": lambda: (
            x(5, 48, requires_grad=True),
            _signs(48, 22).requires_grad_(),
            False,
            1.0,
        ),
        "only-signs-require-grad": lambda: (x(5, 64), _signs(64, 22).requires_grad_(), True, 1.0),
        "leading-dims-3d": lambda: (x(2, 3, 64, requires_grad=True), _signs(64, 23), True, 1.0),
        "leading-dims-4d": lambda: (x(2, 1, 3, 48, requires_grad=True), None, False, 1.0),
        "1d": lambda: (x(64, requires_grad=True), _signs(64, 24), False, 1.0),
        "noncontig-transposed": lambda: (x(48, 5).t().requires_grad_(), _signs(48, 25), False, 1.0),
        "noncontig-sliced": lambda: (x(4, 96)[:, ::2].detach().requires_grad_(), _signs(48, 26), True, 1.0),
        "noncontig-signs": lambda: (x(3, 64, requires_grad=True), _signs(128, 27)[::2], False, 1.0),
        "fp64": lambda: (x(3, 48, dtype=torch.float64, requires_grad=True), _signs(48, 28).double(), False, 1.0),
    }


_RHT_CASES = _rht_cases()


@pytest.mark.parametrize("case", list(_RHT_CASES))
def test_opcheck_rht(case):
    args = _RHT_CASES[case]()
    if case.startswith("noncontig") and case != "noncontig-signs":
        assert not args[0].is_contiguous()
    opcheck(ops.rht.default, args)


_GEMV_X_SHAPES = {
    "1-row": (1, N),
    "5-rows": (5, N),
    "3d": (2, 3, N),
    "0-rows": (0, N),
    "33-rows-gemm-path": (33, N),  # > 32 rows: the kernel's decode-then-GEMM path instead of the fused one
}


@pytest.mark.parametrize("case", list(_GEMV_X_SHAPES))
def test_opcheck_gemv(qm_hyb, case):
    x = torch.randn(*_GEMV_X_SHAPES[case], generator=_gen(30), requires_grad=True)
    opcheck(ops.gemv.default, (x, qm_hyb.packed, *qm_hyb.code_args()))


def test_opcheck_gemv_noncontiguous_input(qm_hyb):
    x = torch.randn(N, 4, generator=_gen(31)).t().requires_grad_()
    assert not x.is_contiguous()
    opcheck(ops.gemv.default, (x, qm_hyb.packed, *qm_hyb.code_args()))


def test_opcheck_gemv_fp64_input(qm_hyb):
    x = torch.randn(3, N, generator=_gen(32), dtype=torch.float64, requires_grad=True)
    opcheck(ops.gemv.default, (x, qm_hyb.packed, *qm_hyb.code_args()))


def test_opcheck_gemv_computed_code_without_tlut(qm_1mad):
    x = torch.randn(3, qm_1mad.n, generator=_gen(33), requires_grad=True)
    opcheck(ops.gemv.default, (x, qm_1mad.packed, *qm_1mad.code_args()))


_LUT8_V1 = qtip_ops.random_lut(8, 1, seed=4)
_LUT8_V2 = qtip_ops.random_lut(8, 2, seed=5)


@pytest.mark.parametrize(
    "B, T, V, tlut, tail_biting",
    [
        (3, 256, 1, _LUT8_V1, True),  # one 16x16 tile per row
        (2, 64, 1, _LUT8_V1, False),
        (2, 64, 2, _LUT8_V2, True),
        (0, 256, 1, _LUT8_V1, True),  # empty batch
    ],
    ids=["tile-tb", "no-tail-biting", "V2", "empty"],
)
def test_opcheck_viterbi_quantize(B, T, V, tlut, tail_biting):
    # L=8 keeps the Viterbi search cheap (256 states). viterbi_quantize has no autograd formula (its outputs
    # are an argmin path and its reconstruction), so x does not require grad: test_autograd_registration then
    # only checks that nothing wrongly claims differentiability.
    x = torch.randn(B, T, generator=_gen(40))
    opcheck(ops.viterbi_quantize.default, (x, 8, 2, V, "lut", tlut, tail_biting))


def test_opcheck_bitshift_decode_inferred_T(qm_hyb):
    opcheck(ops.bitshift_decode.default, (qm_hyb.packed, qm_hyb.L, qm_hyb.K, qm_hyb.V, qm_hyb.mode, qm_hyb.tlut, -1, True))


def test_opcheck_bitshift_decode_explicit_T_computed_code(qm_1mad):
    opcheck(ops.bitshift_decode.default, (qm_1mad.packed, qm_1mad.L, qm_1mad.K, 1, "1mad", None, 256, True))


def test_opcheck_bitshift_decode_without_tail_biting():
    packed, _ = ops.viterbi_quantize(torch.randn(3, 64, generator=_gen(41)), 8, 2, 1, "lut", _LUT8_V1, False)
    opcheck(ops.bitshift_decode.default, (packed, 8, 2, 1, "lut", _LUT8_V1, 64, False))


@pytest.mark.parametrize(
    "mode, L, V, tlut, shape, dtype",
    [
        ("hyb", 16, 2, torch.randn(512, 2, generator=_gen(50)).half(), (4, 5), torch.int64),
        ("lut", 8, 2, _LUT8_V2, (7,), torch.int32),
        ("1mad", 16, 1, None, (2, 3, 4), torch.int64),
        ("3inst", 16, 1, None, (0,), torch.int64),
    ],
    ids=["hyb-2d", "lut-int32", "1mad-3d", "3inst-empty"],
)
def test_opcheck_decode_states(mode, L, V, tlut, shape, dtype):
    states = torch.randint(0, 1 << L, shape, generator=_gen(51)).to(dtype)
    opcheck(ops.decode_states.default, (states, mode, L, V, tlut))


# ------------------------------------------------------------------------------------------ torch.compile


def test_eager_model_matches_dense_reference(model):
    """Anchors the compiled/exported comparisons below: eager itself is the dense float64 computation."""
    for b in (1, 3, 7, 40):
        x = torch.randn(b, N, generator=_gen(60 + b))
        torch.testing.assert_close(model(x), dense_reference(model, x).float(), atol=ATOL, rtol=RTOL)


def test_dynamo_explain_one_graph_no_breaks(model):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(3, N, generator=_gen(61)))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # The custom ops are captured as opaque calls, not traced into or replaced.
    targets = [node.target for node in explanation.graphs[0].graph.nodes if node.op == "call_function"]
    qtip_calls = [str(t) for t in targets if "qtip" in str(t)]
    assert sum("rht" in t for t in qtip_calls) == 2 and sum("gemv" in t for t in qtip_calls) == 1, targets


def test_compile_fullgraph_dynamic_no_recompiles(model):
    """fullgraph=True raises on any graph break; one frame compiled for every batch size >= 2 (sizes 0 and 1
    get dynamo's documented 0/1 specialization: at most one extra graph, then no further recompiles)."""
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for b in (3, 7, 2, 40):  # 40 > 32 rows also takes gemv's decode-then-GEMM kernel path
            x = torch.randn(b, N, generator=_gen(70 + b))
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
        assert counter.frame_count == 1
        x1 = torch.randn(1, N, generator=_gen(71))
        torch.testing.assert_close(compiled(x1), model(x1), atol=ATOL, rtol=RTOL)
        frames = counter.frame_count
        assert frames <= 2
        for b in (1, 5, 9):
            x = torch.randn(b, N, generator=_gen(80 + b))
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
        assert counter.frame_count == frames


@pytest.mark.skipif(
    "backed_size_oblivious" not in fx_config._config, reason="this torch has no backed_size_oblivious switch"
)
def test_compile_one_graph_for_batch_1_3_7(model):
    """With size-oblivious reasoning (no 0/1 specialization) a single graph serves batch 1, 3, 7 (and 0):
    neither the fake kernels nor the wrappers force any guard on the batch size."""
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    with fx_config.patch(backed_size_oblivious=True), torch.no_grad():
        compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
        for b in (1, 3, 7, 0):
            x = torch.randn(b, N, generator=_gen(90 + b))
            out = compiled(x)
            assert out.shape == (b, M)
            torch.testing.assert_close(out, model(x), atol=ATOL, rtol=RTOL)
    assert counter.frame_count == 1


def test_compile_3d_input(model):
    """Leading dims beyond the batch: gemv's fake kernel keeps x.shape[:-1]."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for shape in ((2, 3, N), (4, 5, N)):
            x = torch.randn(*shape, generator=_gen(95))
            out = compiled(x)
            assert out.shape == (*shape[:-1], M)
            torch.testing.assert_close(out, model(x), atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("learn_su", [False, True], ids=["x-grad", "x-and-SU-grad"])
def test_compiled_gradients_match_eager(qm_hyb, learn_su):
    model = QTIPLinear(qm_hyb, learn_su=learn_su)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for b in (3, 6):
        x = torch.randn(b, N, generator=_gen(100 + b))
        upstream = torch.randn(b, M, generator=_gen(110 + b))
        grads = {}
        for name, fn in (("eager", model), ("compiled", compiled)):
            model.zero_grad(set_to_none=True)
            xg = x.clone().requires_grad_()
            (fn(xg) * upstream).sum().backward()
            grads[name] = (xg.grad, model.SU.grad if learn_su else None)
        # Independent oracle: autograd through the dense float64 layer.
        xd = x.double().requires_grad_()
        sud = model.SU.detach().double().requires_grad_(learn_su)
        (dense_reference(model, xd, sud) * upstream.double()).sum().backward()

        gx_eager, gsu_eager = grads["eager"]
        gx_comp, gsu_comp = grads["compiled"]
        assert gx_comp is not None and gx_comp.shape == x.shape
        torch.testing.assert_close(gx_comp, gx_eager, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(gx_eager, xd.grad.float(), atol=ATOL, rtol=RTOL)
        if learn_su:
            assert gsu_comp is not None and gsu_comp.shape == (N,)
            torch.testing.assert_close(gsu_comp, gsu_eager, atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(gsu_eager, sud.grad.float(), atol=ATOL, rtol=RTOL)
    assert counter.frame_count == 1


# ------------------------------------------------------------------------------ export + AOTInductor


_RUN_PACKAGE = textwrap.dedent(
    """
    import sys
    import torch
    import qtip_ops  # registers the qtip ops (schemas + CPU kernels) in this fresh process

    package, inputs, outputs = sys.argv[1:4]
    runner = torch._inductor.aoti_load_package(package)
    torch.save([runner(x) for x in torch.load(inputs)], outputs)
    """
)


@pytest.mark.slow  # label only: one AOTInductor build (~30-90 s on 2 cores); runs by default
def test_export_aoti_package_runs_in_fresh_process(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = torch.randn(4, N, generator=_gen(120))
    ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))

    # The exported graph keeps the custom ops as single nodes and the batch dim symbolic.
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(ops.rht.default) == 2 and targets.count(ops.gemv.default) == 1, targets
    sizes = (1, 3, 7, 40)  # 40 > 32 rows: gemv's decode-then-GEMM path
    inputs = [torch.randn(b, N, generator=_gen(130 + b)) for b in sizes]
    expected = [model(x) for x in inputs]
    exported = ep.module()
    for x, want in zip(inputs, expected):
        torch.testing.assert_close(exported(x), want, atol=ATOL, rtol=RTOL)

    package = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "model.pt2"))
    assert os.path.isfile(package)
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_PACKAGE, package, str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")],
        env=dict(os.environ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    outputs = torch.load(tmp_path / "outputs.pt")
    assert len(outputs) == len(inputs)
    for x, out, want in zip(inputs, outputs, expected):
        if isinstance(out, (list, tuple)):
            assert len(out) == 1
            out = out[0]
        assert out.shape == (x.shape[0], M) and out.dtype == torch.float32
        torch.testing.assert_close(out, want, atol=ATOL, rtol=RTOL)
