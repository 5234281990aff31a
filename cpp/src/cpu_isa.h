// The widest x86 vector instruction set the CPU backend may use, picked at run
// time: the extension is compiled for baseline x86-64 (so one wheel runs on any
// x86-64 CPU), and its hot loops are compiled again for AVX2 and AVX-512 with
// EGAL_TARGET_AVX2 / EGAL_TARGET_AVX512 and called through this choice.
// Internal to the backends.
#pragma once
#include <string>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define EGAL_X86_DISPATCH 1
// AVX2 with FMA and F16C: Haswell, Zen and later.
#define EGAL_TARGET_AVX2 __attribute__((target("avx,avx2,fma,f16c")))
// AVX-512 F/BW/VL (Skylake-SP, Ice Lake, Zen 4 and later), with the same AVX2 set.
#define EGAL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx,avx2,fma,f16c")))
#else
#define EGAL_X86_DISPATCH 0
#endif

// Forces a generic helper into each instruction-set variant of its caller, so
// that it is compiled for that variant's vector width.
#if defined(__GNUC__) || defined(__clang__)
#define EGAL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EGAL_ALWAYS_INLINE inline
#endif

namespace egal::cpu {

enum class Isa { Baseline, Avx2, Avx512 };

// The instruction set the kernels use now: the best this CPU supports, unless
// set_isa chose a narrower one.
Isa isa();
const char* isa_name(Isa isa);
// The best instruction set this CPU supports.
Isa best_isa();
// For tests and benchmarks: use `name` ("baseline", "avx2", "avx512") from the
// next call on. Throws std::invalid_argument for an unknown name or one the CPU lacks.
void set_isa(const std::string& name);

}  // namespace egal::cpu
