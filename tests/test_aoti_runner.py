"""A whole quantized decoder as an AOTInductor package (qtip_ops/aoti.py), run three ways on the same ids:
in this process, in a fresh Python process (export/run_pt2.py: `import qtip_ops` + aoti_load_package), and
by the C++ runner (export/runner: libtorch + a Python-free build of the op library, no Python in the process).
All three must give the eager logits.

One package for the module (AOTInductor compiles take 20-60 s on 2 cores): a 2-layer random tiny Llama
quantized at K=2, L=8, exported with dynamic batch and sequence length. The cmake build of the runner is
cached under export/build/runner (incremental after the first build, about 1.5 minutes on 2 cores)."""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qtip_ops  # noqa: F401  (registers the qtip ops)

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
RUNNER_SRC = ROOT / "export" / "runner"
RUNNER_BUILD = ROOT / "export" / "build" / "runner"
VOCAB = 256
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    from qtip_ops.checkpoint import round_unquantized
    from qtip_ops.quantize import CodeConfig, quantize_model

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(1))
    quantize_model(model, ids, CodeConfig(K=2, L=8), progress=False)
    round_unquantized(model, torch.float16)
    return model


@pytest.fixture(scope="module")
def package(tiny, tmp_path_factory):
    from qtip_ops.aoti import export_decoder

    return export_decoder(tiny, tmp_path_factory.mktemp("aoti") / "tiny.pt2")


@pytest.fixture(scope="module")
def runner_exe():
    """Builds export/runner with cmake (cached in export/build/runner); skips without cmake or a C++ compiler."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed (needed to build the C++ runner)")
    if not any(shutil.which(c) for c in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++"))):
        pytest.skip("no C++ compiler found (c++, g++, clang++ or $CXX)")
    RUNNER_BUILD.mkdir(parents=True, exist_ok=True)
    log = []
    with open(RUNNER_BUILD.parent / ".runner.lock", "w") as lock:  # concurrent test sessions share the build
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in ([cmake, "-S", str(RUNNER_SRC), "-B", str(RUNNER_BUILD), "-DCMAKE_BUILD_TYPE=Release",
                     f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                    [cmake, "--build", str(RUNNER_BUILD), "-j", str(os.cpu_count() or 2)]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            log.append(proc.stdout + proc.stderr)
            assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n" + "\n".join(log)[-6000:]
    exe = RUNNER_BUILD / "qtip_runner"
    assert exe.is_file()
    return exe


def _ids(batch, seq, seed):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _write_ids(path: Path, ids: torch.Tensor) -> Path:
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in ids.tolist()))
    return path


def _eager(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def _printed_argmax(stdout: str) -> list[list[int]]:
    return [[int(t) for t in line.split(":", 1)[1].split()] for line in stdout.splitlines()
            if line.startswith("argmax[")]


# ----------------------------------------------------------------------------------------------- tests


def test_export_keeps_qtip_ops_and_dynamic_shapes(tiny):
    from qtip_ops.aoti import export_program

    ep, meta = export_program(tiny)
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.qtip.gemv.default) == 14 and targets.count(torch.ops.qtip.rht.default) == 28
    assert meta["qtip.seq_len"] == "dynamic" and meta["qtip.batch"] == "dynamic"
    for shape in ((1, 1), (3, 17)):
        ids = _ids(*shape, seed=sum(shape))
        torch.testing.assert_close(ep.module()(ids), _eager(tiny, ids), **TOL)


@pytest.mark.slow  # builds the module's one AOTInductor package
def test_package_in_process_any_batch_and_length(tiny, package):
    from qtip_ops.aoti import load_package

    runner = load_package(package)
    assert runner.get_metadata()["qtip.seq_len"] == "dynamic"
    for shape in ((1, 1), (2, 9), (3, 40)):
        ids = _ids(*shape, seed=10 + sum(shape))
        torch.testing.assert_close(runner(ids), _eager(tiny, ids), **TOL)


@pytest.mark.slow
def test_fresh_python_process_runner(tiny, package, tmp_path):
    ids = _ids(2, 11, seed=20)
    proc = subprocess.run([sys.executable, str(ROOT / "export" / "run_pt2.py"), str(package),
                           "--ids-file", str(_write_ids(tmp_path / "ids.txt", ids)),
                           "--raw", str(tmp_path / "logits.f32")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr
    want = _eager(tiny, ids)
    got = torch.from_file(str(tmp_path / "logits.f32"), size=want.numel(), dtype=torch.float32).view_as(want)
    torch.testing.assert_close(got, want, **TOL)
    assert _printed_argmax(proc.stdout) == want.argmax(-1).tolist()
    assert "checksum: sum=" in proc.stdout


@pytest.mark.slow
def test_cpp_runner_without_python(tiny, package, runner_exe, tmp_path):
    ldd = shutil.which("ldd")
    if ldd:  # no libpython or libtorch_python anywhere in the runner's dependencies
        deps = subprocess.run([ldd, str(runner_exe)], capture_output=True, text=True).stdout
        assert "libqtip_ops_cpu" in deps and "libtorch_cpu" in deps
        assert "libpython" not in deps and "libtorch_python" not in deps, deps
    ids = _ids(3, 13, seed=30)
    raw = tmp_path / "logits.f32"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(runner_exe), str(package), str(_write_ids(tmp_path / "ids.txt", ids)), str(raw)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = _eager(tiny, ids)
    assert raw.stat().st_size == want.numel() * 4
    got = torch.from_file(str(raw), size=want.numel(), dtype=torch.float32).view_as(want)
    torch.testing.assert_close(got, want, **TOL)
    assert _printed_argmax(proc.stdout) == want.argmax(-1).tolist()
    assert f"logits: [3, 13, {VOCAB}]" in proc.stdout
    checksum = next(line for line in proc.stdout.splitlines() if line.startswith("checksum:"))
    assert abs(float(checksum.split("sum=")[1].split()[0]) - want.double().sum().item()) < 1e-2


def test_cpp_runner_errors(runner_exe, package, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 5\n")
    proc = subprocess.run([str(runner_exe), str(package), str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "same number of ids" in proc.stderr
    good = _write_ids(tmp_path / "good.txt", _ids(1, 4, seed=40))
    proc = subprocess.run([str(runner_exe), str(tmp_path / "missing.pt2"), str(good)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("qtip_runner: error:")
    proc = subprocess.run([str(runner_exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    # token ids beyond the vocabulary: refused from the package's metadata (AOTInductor does not bound-check)
    oov = _write_ids(tmp_path / "oov.txt", torch.tensor([[1, 2, VOCAB]]))
    proc = subprocess.run([str(runner_exe), str(package), str(oov)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"token ids must be in [0, {VOCAB}), got {VOCAB}" in proc.stderr


def test_check_input_ids():
    from qtip_ops.aoti import check_input_ids

    meta = {"qtip.batch": "dynamic", "qtip.seq_len": "8", "qtip.max_seq_len": "128", "qtip.vocab_size": "256"}
    check_input_ids(meta, torch.zeros(3, 8, dtype=torch.int64))
    for ids, message in ((torch.zeros(1, 5, dtype=torch.int64), "sequences of 8 tokens, got 5"),
                         (torch.full((1, 8), 256), r"token ids must be in \[0, 256\)"),
                         (torch.zeros(8, dtype=torch.int64), "must be a \\(batch, seq\\) int64"),
                         (torch.zeros(1, 8, dtype=torch.int32), "int64")):
        with pytest.raises(ValueError, match=message):
            check_input_ids(meta, ids)
    with pytest.raises(ValueError, match="sequence length must be in"):
        check_input_ids({"qtip.seq_len": "dynamic", "qtip.max_seq_len": "4"}, torch.zeros(1, 5, dtype=torch.int64))
