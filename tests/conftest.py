import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import qtip_ops  # noqa: E402

settings.register_profile(
    "default", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def hyb_tlut():
    return qtip_ops.default_hyb_tlut()  # the shipped default table


def make_tlut(mode: str, L: int, V: int, hyb_tlut=None):
    """The table a mode needs (None for computed modes)."""
    if mode == "lut":
        return qtip_ops.random_lut(L, V, seed=L * 10 + V)
    if mode == "hyb":
        return hyb_tlut if hyb_tlut is not None else qtip_ops.default_hyb_tlut(q=6, samples=1 << 12)
    return None


# (mode, V) pairs that exist; every test that sweeps modes uses this list.
MODE_V = [("lut", 1), ("lut", 2), ("1mad", 1), ("2mad", 1), ("3inst", 1), ("hyb", 2)]

cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key("qtip::gemv", "CUDA")),
    reason="needs an NVIDIA GPU and qtip_ops built with its CUDA kernels",
)


# The op tests run once per CPU path this machine has (AVX-512 and AVX2 where the CPU has them, and the portable
# scalar kernels), so all stay correct; tests marked slow, or one_path, run on the default (fastest) path only, to
# keep the suite short.
PATH_MODULES = {"test_codes", "test_gemv", "test_rht", "test_viterbi"}
qtip_ops.set_cpu_path("auto")
CPU_PATHS = qtip_ops.available_cpu_paths()


def pytest_configure(config):
    config.addinivalue_line("markers", "one_path: run on the default CPU path only (slow, path-independent)")


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ not in PATH_MODULES:
        return
    marks = {m.name for m in metafunc.definition.iter_markers()}
    paths = CPU_PATHS if not marks & {"slow", "one_path"} else CPU_PATHS[:1]
    metafunc.fixturenames.append("cpu_path")
    metafunc.parametrize("cpu_path", paths, indirect=True)


@pytest.fixture
def cpu_path(request):
    """Runs the test on the CPU kernels named by the parameter, then restores automatic selection."""
    qtip_ops.set_cpu_path(request.param)
    yield request.param
    qtip_ops.set_cpu_path("auto")
