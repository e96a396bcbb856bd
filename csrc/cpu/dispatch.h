// Run-time choice among the CPU kernels: portable scalar, AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL, VBMI,
// VBMI2).
//
// The vector kernels live in *_avx2.cpp / *_avx512.cpp files compiled for their target, so the library loads on
// any CPU; a level runs only where the CPU has its instructions and nothing caps it lower. Each kernel takes the
// highest level it implements at or below the allowed one (an op without an AVX-512 kernel runs its AVX2 one on
// the AVX-512 level). All levels give bit-identical results, which the tests check by running every op on each.
#pragma once

namespace qtip {

// Ordered: a higher level may use the instructions of every lower one.
enum class CpuLevel : int { SCALAR = 1, AVX2 = 2, AVX512 = 3 };

// The highest level this CPU supports (and this build compiled in).
CpuLevel cpu_max_level();

// cpu_max_level() capped by the environment (QTIP_CPU_PATH=scalar|avx2|avx512|auto, or the older
// QTIP_FORCE_SCALAR=1), read at every call: the levels a process may select.
CpuLevel cpu_allowed_level();

// The level the kernels may use now: cpu_allowed_level() capped by qtip_set_cpu_path, so that a switch takes
// effect between two calls without reloading anything.
CpuLevel cpu_level();

}  // namespace qtip

// C entry points (for ctypes: the library is loaded with torch.ops.load_library, not as a Python module).
// Levels: 0 = auto (the best the CPU has), 1 = scalar, 2 = AVX2, 3 = AVX-512.
// Caps the kernels at `level`; returns the previous setting, or -1 (changing nothing) for an unknown level.
extern "C" int qtip_set_cpu_path(int level);
// The level the next kernel call may use (1, 2 or 3).
extern "C" int qtip_cpu_level();
// The highest level this CPU supports and the environment allows (1, 2 or 3).
extern "C" int qtip_cpu_allowed_level();
