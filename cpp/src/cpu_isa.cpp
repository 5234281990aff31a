#include "cpu_isa.h"

#include <atomic>
#include <stdexcept>

#include "egal/score.h"

namespace egal::cpu {
namespace {

Isa detect() {
#if EGAL_X86_DISPATCH
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Baseline;
}

std::atomic<Isa>& chosen() {
  static std::atomic<Isa> value{best_isa()};
  return value;
}

}  // namespace

Isa best_isa() {
  static const Isa best = detect();
  return best;
}

Isa isa() { return chosen().load(std::memory_order_relaxed); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Baseline: return "baseline";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "unknown";
}

void set_isa(const std::string& name) {
  for (Isa candidate : {Isa::Baseline, Isa::Avx2, Isa::Avx512}) {
    if (name != isa_name(candidate)) continue;
    if (static_cast<int>(candidate) > static_cast<int>(best_isa()))
      throw std::invalid_argument(std::string("this CPU does not support ") + name + " (best: " + isa_name(best_isa()) +
                                  ")");
    chosen().store(candidate, std::memory_order_relaxed);
    return;
  }
  throw std::invalid_argument("unknown instruction set '" + name + "': use baseline, avx2 or avx512");
}

}  // namespace egal::cpu

namespace egal {

const char* cpu_isa() { return cpu::isa_name(cpu::isa()); }
const char* best_cpu_isa() { return cpu::isa_name(cpu::best_isa()); }
void set_cpu_isa(const std::string& name) { cpu::set_isa(name); }

}  // namespace egal
