// Run-time path selection (see dispatch.h).
#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace qtip {
namespace {
std::atomic<int> g_path{static_cast<int>(CpuPath::AUTO)};
}

bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

bool use_avx2() {
  if (g_path.load(std::memory_order_relaxed) == static_cast<int>(CpuPath::SCALAR)) return false;
  const char* force = std::getenv("QTIP_FORCE_SCALAR");
  if (force != nullptr && std::strcmp(force, "1") == 0) return false;
  return cpu_has_avx2();
}

}  // namespace qtip

extern "C" int qtip_set_cpu_path(int path) {
  return qtip::g_path.exchange(path == static_cast<int>(qtip::CpuPath::SCALAR) ? 1 : 0);
}

extern "C" int qtip_cpu_path_is_avx2() { return qtip::use_avx2() ? 1 : 0; }
