// Run-time choice between the portable scalar kernels and the AVX2 (+FMA, F16C) ones.
//
// The AVX2 kernels live in *_avx2.cpp files compiled for that target, so the library loads on any x86-64 (or
// other) CPU; they run only where the CPU has the instructions and nothing forces the scalar path. Both paths
// give bit-identical results, which the tests check by running every op on each.
#pragma once

namespace qtip {

enum class CpuPath : int { AUTO = 0, SCALAR = 1 };

// The CPU supports the AVX2 kernels and they were compiled in (x86-64 with GCC or Clang).
bool cpu_has_avx2();

// True when a kernel should take its AVX2 path now: read at every call, so QTIP_FORCE_SCALAR=1 in the
// environment or qtip_set_cpu_path(SCALAR) switches paths between two calls without reloading anything.
bool use_avx2();

}  // namespace qtip

// C entry points (for ctypes: the library is loaded with torch.ops.load_library, not as a Python module).
// path: 0 = auto (AVX2 where available), 1 = scalar. Returns the previous setting.
extern "C" int qtip_set_cpu_path(int path);
// 1 when the next kernel call will run the AVX2 path, else 0.
extern "C" int qtip_cpu_path_is_avx2();
