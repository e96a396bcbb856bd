"""Builds qtip_ops._C: the `qtip` custom-op library (CPU kernels always; CUDA kernels where nvcc and a CUDA
build of torch are present). Build against the installed torch: `pip install --no-build-isolation .`

Environment:
  QTIP_NO_CUDA=1          build the CPU kernels only, even where CUDA is available
  TORCH_CUDA_ARCH_LIST    CUDA targets (default here: "8.0;9.0", i.e. sm_80 and sm_90)
  MAX_JOBS                parallel compile jobs (ninja)
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

# Bit-exact agreement between kernels and devices needs the compiler to keep a*b + c as two roundings.
# -fopenmp: at::parallel_for's OpenMP loop is inline in torch's headers, so without it our loops run serially
# (the process shares torch's libgomp.so.1).
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]
LINK_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "--fmad=false", "--expt-relaxed-constexpr"]


def wants_cuda(cuda_sources):
    if os.environ.get("QTIP_NO_CUDA") == "1" or not cuda_sources:
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    if wants_cuda(cuda_sources):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        return CUDAExtension(
            "qtip_ops._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
            extra_link_args=LINK_FLAGS,
        )
    return CppExtension("qtip_ops._C", sources, extra_compile_args={"cxx": CXX_FLAGS}, extra_link_args=LINK_FLAGS)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
