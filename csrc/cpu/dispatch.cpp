// Run-time path selection (see dispatch.h).
#include "dispatch.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace qtip {
namespace {

std::atomic<int> g_cap{0};  // 0: no cap

// The cap the environment sets (0: none). An unknown QTIP_CPU_PATH value caps nothing, as if unset.
int environment_cap() {
  const char* force = std::getenv("QTIP_FORCE_SCALAR");
  if (force != nullptr && std::strcmp(force, "1") == 0) return static_cast<int>(CpuLevel::SCALAR);
  const char* path = std::getenv("QTIP_CPU_PATH");
  if (path == nullptr) return 0;
  if (std::strcmp(path, "scalar") == 0) return static_cast<int>(CpuLevel::SCALAR);
  if (std::strcmp(path, "avx2") == 0) return static_cast<int>(CpuLevel::AVX2);
  if (std::strcmp(path, "avx512") == 0) return static_cast<int>(CpuLevel::AVX512);
  return 0;
}

}  // namespace

CpuLevel cpu_max_level() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const CpuLevel level = [] {
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")))
      return CpuLevel::SCALAR;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
        __builtin_cpu_supports("avx512vbmi2"))
      return CpuLevel::AVX512;
    return CpuLevel::AVX2;
  }();
  return level;
#else
  return CpuLevel::SCALAR;
#endif
}

namespace {
CpuLevel capped(CpuLevel level, int cap) {  // cap 0: none
  return cap != 0 ? static_cast<CpuLevel>(std::min(static_cast<int>(level), cap)) : level;
}
}  // namespace

CpuLevel cpu_allowed_level() { return capped(cpu_max_level(), environment_cap()); }

CpuLevel cpu_level() { return capped(cpu_allowed_level(), g_cap.load(std::memory_order_relaxed)); }

}  // namespace qtip

extern "C" int qtip_set_cpu_path(int level) {
  if (level < 0 || level > static_cast<int>(qtip::CpuLevel::AVX512)) return -1;
  return qtip::g_cap.exchange(level);
}

extern "C" int qtip_cpu_level() { return static_cast<int>(qtip::cpu_level()); }

extern "C" int qtip_cpu_allowed_level() { return static_cast<int>(qtip::cpu_allowed_level()); }
